//! bench/bulk: a card offload. N small clips dropped at once into one folder of the watch root
//! go through the real postflow binary into the simulated Frame.io, which enforces Frame.io's
//! documented per-endpoint rate limits (5 creates a second, 5 status polls a second, 100
//! folder listings a minute, 10 stack creations a minute, …).
//!
//! Prints the wall time (postflow started with the files in place → every job `done`, and
//! with versions every stacking settled), the floor Frame.io's limits set and which limit
//! sets it, the ratio, and the calls per file by endpoint, for uploads and for stacking.
//! Targets (issues 12 and 15): at most 0.1 folder listings per file, and the wall time within
//! 1.5x of the floor. Exits non-zero only if a file did not arrive exactly once with the right
//! bytes, or (with versions) the stacks are not one per shot in version order.
//!
//! `cargo build --release --workspace --bins --examples` first (`bench/bulk` does), then
//! `cargo run --release --example bulk -- [--files N] [--shots S --versions V] [--projects N]
//! [--mode local|remote] [--concurrency C] [--existing K] [--dir D] [--postflow PATH]`.
//! `--shots S --versions V` makes the card S shots of V versions each
//! (`A001_SH0001_v001.mxf` …) under `layout.pattern` `{roll}_{shot}_v{version}.{ext}`, so
//! postflow stacks them (`--files` is then S × V). `--existing K` puts K files in the Frame.io
//! folder beforehand (a dailies folder that has grown: a listing of it is K/100 pages);
//! `--postflow` runs another build (an older one, for a before/after).
//!
//! `--projects N` (issue 21) splits the card over N projects of one Frame.io account: N watch
//! roots (`watch/show1` …) in one postflow's `projects` list, N simulated projects, the clips
//! dealt out in turn (a shot's versions stay together), `--existing` files in each project's
//! folder. The floor is the same as for one project: Frame.io's limits are per account. It
//! also prints when each project's last file was done. Target (issue 21): the 300-file figure
//! over 3 projects within 1.1x of the one-project figure. `--projects 1`, the default, is the
//! one-folder config without a `projects` list, as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::{FrameIo, Options, SimProject};

/// Frame.io's limits that set the floor: remote_upload / local_upload, and file status.
const CREATES_PER_SEC: f64 = 5.0;
const STATUS_PER_SEC: f64 = 5.0;
/// Stack creation (10 a minute) and moves (100 a minute): leaky buckets that hold that many,
/// so the first bucketful goes at once.
const STACKS_PER_MIN: f64 = 10.0;
const MOVES_PER_MIN: f64 = 100.0;

/// The endpoints that list a folder's contents (a page per 100 entries each).
const LISTINGS: [&str; 3] = ["list_children", "list_files", "list_version_stacks"];
/// The endpoints the stacking step uses, and the upload's (show_file is both: a local upload
/// asks for its file's view link once).
const STACKING: [&str; 7] = [
    "list_files",
    "list_version_stacks",
    "show_version_stack",
    "list_version_stack_children",
    "create_version_stack",
    "move_file",
    "reorder_versions",
];
const BOTH: [&str; 1] = ["show_file"];
const UPLOADS: [&str; 5] = [
    "local_upload",
    "remote_upload",
    "file_status",
    "s3_put_part",
    "delete_file",
];

struct Args {
    files: usize,
    /// Versioned card: shots × versions (0: plain clips).
    shots: usize,
    versions: usize,
    mode: String,
    concurrency: usize,
    existing: usize,
    /// Projects of one account the card is split over (1: the one-folder config).
    projects: usize,
    dir: PathBuf,
    postflow: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let bin_dir = bin_dir();
    let mut a = Args {
        files: 300,
        shots: 0,
        versions: 1,
        mode: "local".into(),
        concurrency: 2,
        existing: 0,
        projects: 1,
        dir: bin_dir.parent().unwrap_or(&bin_dir).join("bulk"),
        postflow: bin_dir.join("postflow"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--files" => a.files = num(value()?)?,
            "--shots" => a.shots = num(value()?)?,
            "--versions" => a.versions = num(value()?)?,
            "--mode" => a.mode = value()?,
            "--concurrency" => a.concurrency = num(value()?)?,
            "--existing" => a.existing = num(value()?)?,
            "--projects" => a.projects = num(value()?)?,
            "--dir" => a.dir = value()?.into(),
            "--postflow" => a.postflow = value()?.into(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.shots > 0 {
        if a.versions == 0 {
            return Err("--versions must be at least 1".into());
        }
        a.files = a.shots * a.versions;
    }
    if a.files == 0 || !["local", "remote"].contains(&a.mode.as_str()) {
        return Err("need --files >= 1 and --mode local|remote".into());
    }
    // Every project gets a file (a shot's versions stay in one project).
    let units = if a.shots > 0 { a.shots } else { a.files };
    if a.projects == 0 || a.projects > units {
        return Err("--projects must be at least 1 and at most the number of files (shots)".into());
    }
    Ok(a)
}

/// target/<profile>: this example lives in target/<profile>/examples.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples/bulk")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `/api/queue/stats` of the running instance: jobs done, in all and by project.
fn done(dashboard: u16) -> Option<(u64, BTreeMap<String, u64>)> {
    let mut resp = ureq::get(&format!("http://127.0.0.1:{dashboard}/api/queue/stats"))
        .call()
        .ok()?;
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    let by_project = v["by_project"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, p)| (name.clone(), p["counts"]["done"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Some((v["counts"]["done"].as_u64()?, by_project))
}

/// `/api/jobs` of the running instance: are all `files` jobs there with no stacking pending?
fn stacks_settled(dashboard: u16, files: usize) -> Option<bool> {
    let mut resp = ureq::get(&format!("http://127.0.0.1:{dashboard}/api/jobs?limit=1000"))
        .call()
        .ok()?;
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    let jobs = v["jobs"].as_array()?;
    Some(jobs.len() >= files && jobs.iter().all(|j| j["stack"]["state"] != "pending"))
}

/// The name of version `v` of shot `shot` on the card.
fn clip_name(shot: usize, v: usize) -> String {
    format!("A001_SH{shot:04}_v{v:03}.mxf")
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bulk: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let postflow = std::path::absolute(&args.postflow).map_err(|e| e.to_string())?;
    if !postflow.exists() {
        return Err(format!(
            "{} missing: cargo build --release --workspace --bins --examples",
            postflow.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let (watch, state) = (args.dir.join("watch"), args.dir.join("state"));
    // One project: the one-folder config (watch.root), as before projects existed. Several:
    // watch/show1, watch/show2, … each in its own simulated project of the main account.
    let several = args.projects > 1;
    let project_names: Vec<String> = if several {
        (1..=args.projects).map(|i| format!("show{i}")).collect()
    } else {
        vec!["default".into()]
    };
    let roots: Vec<PathBuf> = project_names
        .iter()
        .map(|name| {
            if several {
                watch.join(name)
            } else {
                watch.clone()
            }
        })
        .collect();
    for root in &roots {
        std::fs::create_dir_all(root.join("A001")).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;

    let sim = FrameIo::start(Options {
        projects: project_names[1..]
            .iter()
            .map(|name| SimProject {
                name: name.clone(),
                account: 0,
            })
            .collect(),
        ..Options::default()
    })
    .map_err(|e| format!("simulator: {e}"))?;
    // The simulated project of each of project_names (the main one first).
    let sim_projects = sim.projects();
    if args.existing > 0 {
        for p in &sim_projects {
            let folder = sim.add_folder(&p.root_folder_id, "A001");
            for i in 0..args.existing {
                sim.add_file(&folder, &format!("B001C{i:04}.wav"), 1000);
            }
        }
    }
    let t = sim.login_tokens();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tokens = json!({"access_token": t.access_token, "refresh_token": t.refresh_token,
                        "expires_at": now + t.expires_in});
    std::fs::write(state.join("tokens.json"), tokens.to_string()).map_err(|e| e.to_string())?;

    // The clips: 1 to 64 KB of distinct bytes each, so bytes are never the bottleneck.
    // Versions of a shot are next to each other, as a card has them.
    let names: Vec<String> = if args.shots > 0 {
        (0..args.shots)
            .flat_map(|shot| (1..=args.versions).map(move |v| clip_name(shot, v)))
            .collect()
    } else {
        (0..args.files)
            .map(|i| format!("A001C{i:04}.wav"))
            .collect()
    };
    // Dealt out to the projects in turn: clip i (or shot i's versions) to project i mod N.
    let project_of = |i: usize| {
        if args.shots > 0 {
            (i / args.versions) % args.projects
        } else {
            i % args.projects
        }
    };
    // (project index, path under its root) -> sha256
    let mut expected = BTreeMap::new();
    let mut x: u32 = 0x9E37_79B9;
    for (i, name) in names.iter().enumerate() {
        let size = 1000 + (i * 2_117) % 63_000;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let rel = format!("A001/{name}");
        let p = project_of(i);
        std::fs::write(roots[p].join(&rel), &bytes).map_err(|e| e.to_string())?;
        expected.insert((p, rel), sha256(&bytes));
    }

    let (dash, serve) = (free_port(), free_port());
    let tunnel = match args.mode.as_str() {
        "remote" => json!({"mode": "external", "public_url": format!("http://127.0.0.1:{serve}")}),
        _ => json!({"mode": "off"}),
    };
    let layout = if args.shots > 0 {
        json!({"pattern": "{roll}_{shot}_v{version}.{ext}"})
    } else {
        json!({})
    };
    let mut config = json!({
        "watch": {"root": "watch", "settle_secs": 1, "rescan_secs": 60, "upload_existing": true},
        "frameio": {
            "client_id": sim.client_id(), "client_secret": sim.client_secret(),
            "redirect_uri": sim.redirect_uri(), "account_id": sim.account_id(),
            "project_id": sim.project_id(), "api_base": sim.base_url(),
            "ims_base": sim.base_url(), "upload": args.mode,
        },
        "upload": {"concurrency": args.concurrency},
        "layout": layout,
        "serve": {"listen": format!("127.0.0.1:{serve}")},
        "tunnel": tunnel,
        "dashboard": {"listen": format!("127.0.0.1:{dash}")},
        "state_dir": "state",
        "log_level": "info",
    });
    if several {
        // Each project takes the top-level layout; watch.root and frameio.project_id give way
        // to the list.
        config["watch"].as_object_mut().unwrap().remove("root");
        config["frameio"]
            .as_object_mut()
            .unwrap()
            .remove("project_id");
        config["projects"] = project_names
            .iter()
            .zip(&sim_projects)
            .map(|(name, p)| json!({"name": name, "root": format!("watch/{name}"), "project_id": p.id}))
            .collect();
    }
    let config_path = args.dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(args.dir.join("postflow.log")).map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut child = Command::new(&postflow)
        .arg("run")
        .arg(&config_path)
        .current_dir(&args.dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start postflow: {e}"))?;
    // Generous: an older build may list the folder for every file.
    let limit = Duration::from_secs(120 + args.files as u64 * 3 + args.shots as u64 * 12);
    let stacking = args.shots > 0;
    let per_project: Vec<u64> = (0..args.projects)
        .map(|p| expected.keys().filter(|(q, _)| *q == p).count() as u64)
        .collect();
    // When each project's last job was done (seen by polling, to the 100 ms).
    let mut finished: Vec<Option<Duration>> = vec![None; args.projects];
    let wall = loop {
        let stats = done(dash);
        if let Some((_, by_project)) = &stats {
            for (p, name) in project_names.iter().enumerate() {
                if finished[p].is_none() && by_project.get(name) == Some(&per_project[p]) {
                    finished[p] = Some(started.elapsed());
                }
            }
        }
        if stats.map(|(all, _)| all) == Some(args.files as u64)
            && (!stacking || stacks_settled(dash, args.files) == Some(true))
        {
            break started.elapsed();
        }
        if started.elapsed() > limit || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "not done after {:.0} s (see {})",
                started.elapsed().as_secs_f64(),
                args.dir.join("postflow.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(if stacking { 500 } else { 100 }));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    // Exactly once, with the right bytes, in its own project (and nothing else there).
    let have: Vec<_> = sim_projects.iter().map(|p| sim.by_path_in(&p.id)).collect();
    let mut wrong: Vec<String> = expected
        .iter()
        .filter(|((p, path), sha)| {
            have[*p].get(path).is_none_or(|e| {
                e.copies != 1 || e.complete != 1 || e.sha256.as_deref() != Some(sha.as_str())
            })
        })
        .map(|((p, path), _)| format!("{}: {path}", project_names[*p]))
        .collect();
    for (p, paths) in have.iter().enumerate() {
        wrong.extend(
            paths
                .keys()
                .filter(|path| {
                    !path.starts_with("A001/B001C")
                        && !expected.contains_key(&(p, path.to_string()))
                })
                .map(|path| format!("{}: {path} (not its file)", project_names[p])),
        );
    }

    // With versions: one stack per shot of two or more, in version order; none otherwise.
    let mut bad_stacks = Vec::new();
    if stacking {
        let stacks = sim.stacks();
        for shot in 0..args.shots {
            let want: Vec<String> = (1..=args.versions).map(|v| clip_name(shot, v)).collect();
            let of_shot: Vec<_> = stacks
                .iter()
                .filter(|s| s.versions.iter().any(|v| want.contains(v)))
                .collect();
            let right = match args.versions {
                1 => of_shot.is_empty(),
                _ => of_shot.len() == 1 && of_shot[0].versions == want,
            };
            if !right {
                bad_stacks.push(format!("SH{shot:04}: {of_shot:?}"));
            }
        }
    }

    let n = args.files as f64;
    let (creates, moves) = if stacking && args.versions >= 2 {
        (args.shots as f64, (args.shots * (args.versions - 2)) as f64)
    } else {
        (0.0, 0.0)
    };
    let limits = [
        (
            (n / CREATES_PER_SEC).max(n / STATUS_PER_SEC),
            format!(
                "{} creates at {CREATES_PER_SEC}/s and as many status polls at {STATUS_PER_SEC}/s",
                args.files
            ),
        ),
        (
            (creates - STACKS_PER_MIN).max(0.0) * 60.0 / STACKS_PER_MIN,
            format!(
                "{creates} stack creations at {STACKS_PER_MIN}/min (the first {STACKS_PER_MIN} at once)"
            ),
        ),
        (
            (moves - MOVES_PER_MIN).max(0.0) * 60.0 / MOVES_PER_MIN,
            format!(
                "{moves} moves into stacks at {MOVES_PER_MIN}/min (the first {MOVES_PER_MIN} at once)"
            ),
        ),
    ];
    // The first of equal floors: the uploads' limits, when stacking adds nothing.
    let (floor, floor_by) = limits
        .into_iter()
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
        .unwrap_or_default();
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    let mut limited = 0;
    for (key, count) in sim.counters() {
        let (endpoint, status) = key.rsplit_once(' ').unwrap_or((&key, ""));
        *calls.entry(endpoint.to_string()).or_default() += count;
        if status == "429" {
            limited += count;
        }
    }
    let count = |e: &str| *calls.get(e).unwrap_or(&0);
    let listing_calls: u64 = LISTINGS.iter().map(|e| count(e)).sum();
    let listings = listing_calls as f64 / n;
    let ratio = wall.as_secs_f64() / floor;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let card = if stacking {
        format!(
            "{} clips ({} shots x {} versions, layout.pattern {{roll}}_{{shot}}_v{{version}}.{{ext}})",
            args.files, args.shots, args.versions
        )
    } else {
        format!("{} clips", args.files)
    };
    if several {
        println!(
            "bulk: {card} split over {} projects of one account ({}, upload.concurrency {}), \
             each into one folder already holding {} files",
            args.projects, args.mode, args.concurrency, args.existing
        );
    } else {
        println!(
            "bulk: {card} ({}, upload.concurrency {}) into one folder already holding {} files",
            args.mode, args.concurrency, args.existing
        );
    }
    println!(
        "wall {:.1} s (start to last done{}; includes the 1 s settle); floor {floor:.1} s, set by \
         {floor_by}: {ratio:.2}x the floor [target <= 1.5x: {}]",
        wall.as_secs_f64(),
        if stacking { " and stacked" } else { "" },
        verdict(ratio <= 1.5)
    );
    let per = |e: &str| format!("{e} {:.3}", count(e) as f64 / n);
    println!(
        "folder listings: {listings:.3} per file ({listing_calls} in all: {}) [target <= 0.1: {}]",
        LISTINGS.map(|e| format!("{e} {}", count(e))).join(", "),
        verdict(listings <= 0.1)
    );
    let group = |names: &[&str]| {
        names
            .iter()
            .filter(|e| count(e) > 0)
            .map(|e| per(e))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("calls per file, uploads: {}", group(&UPLOADS));
    if stacking {
        println!("calls per file, stacking: {}", group(&STACKING));
    }
    println!(
        "calls per file, both: {} (a local upload asks for its file once, for the view link)",
        group(&BOTH)
    );
    let rest: Vec<String> = calls
        .keys()
        .filter(|e| {
            !e.starts_with("ims_")
                && ![&UPLOADS[..], &STACKING, &BOTH]
                    .concat()
                    .contains(&e.as_str())
        })
        .map(|e| per(e))
        .collect();
    println!(
        "calls per file, other (finding the folder): {}; 429s: {limited}",
        rest.join(", ")
    );
    if several {
        let each: Vec<String> = project_names
            .iter()
            .zip(&per_project)
            .zip(&finished)
            .map(|((name, n), at)| match at {
                Some(at) => format!("{name} {n} files, last done at {:.1} s", at.as_secs_f64()),
                None => format!("{name} {n} files"),
            })
            .collect();
        println!(
            "per project (the floor is per account, so it is the same as for one project): {}",
            each.join("; ")
        );
    }
    if !bad_stacks.is_empty() {
        println!(
            "STACKS WRONG for {} shots, e.g. {:?} (left in {})",
            bad_stacks.len(),
            &bad_stacks[..bad_stacks.len().min(3)],
            args.dir.display()
        );
        return Ok(false);
    } else if stacking && args.versions > 1 {
        println!(
            "stacks: one per shot, in version order: {} shots",
            args.shots
        );
    } else if stacking {
        println!("stacks: none (no shot has a second version)");
    }
    if wrong.is_empty() {
        println!(
            "arrived once with the right bytes: {} of {}",
            args.files, args.files
        );
        let _ = std::fs::remove_dir_all(&args.dir);
        Ok(true)
    } else {
        println!(
            "NOT exactly once: {} files, e.g. {:?} (left in {})",
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            args.dir.display()
        );
        Ok(false)
    }
}
