//! `make screenshots`: the README's picture of the status page, from a real run.
//!
//! The real binary runs as a studio would run it, with nothing test-only set: a watch folder
//! at `/mnt/lucid/exports`, the layout template of the demo, a quick tunnel (the cloudflared
//! stand-in, its edge held to 12.5 MB/s like a studio's 100 Mbit/s uplink) and the simulated Frame.io.
//! Exports arrive as renders do; a v002 is stacked on its v001; then a 2.4 GB export is
//! pulled while the next one is still being written. Once the page shows all of that, headless
//! Chromium takes the picture into `docs/screenshot.png` (or `$SCREENSHOT_DIR`).
//!
//! The watch folder is a folder of this test's sandbox, mounted at `/mnt/lucid/exports` in a
//! mount namespace of postflow's own (`unshare`, with a user namespace when not root), so the
//! page shows the path a studio's page would show instead of this machine's. Before the
//! picture is taken, the page's text is checked for what it must show and for what it must
//! not (a path of this machine, a `/` folder, markup as text).
//!
//! Ignored by a plain `cargo test`: it needs Chromium and `unshare`, and takes a minute or two.
// Linux only: the studio's path is shown through a Linux mount namespace (`unshare`), and the
// README's picture is taken on Linux; nothing here is about Windows or macOS behaviour.
#![cfg(target_os = "linux")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../frameio_support/mod.rs"]
mod frameio_support;
#[path = "../upload_support/mod.rs"]
mod upload_support;

mod chromium;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromium::Browser;
use common::sim_bins::fake_cloudflared;
use common::{signal, wait_exit, wait_until, Sandbox};
use frameio_support::{config_for, seed_tokens, start_sim};
use serde_json::{json, Value};
use upload_support::{free_port, make_file, spawn_logged};

/// Where postflow sees its watch folder.
const STUDIO_ROOT: &str = "/mnt/lucid/exports";
/// The stand-in's edge rate, all transfers together: a 100 Mbit/s uplink.
const UPLINK_BYTES_PER_SEC: u64 = 12_500_000;
const MB: u64 = 1_000_000;

/// The first exports of the day: (path under the watch folder, size).
const FIRST: &[(&str, u64)] = &[
    ("SQ01_UNDLM_00412_v001.mov", 182 * MB),
    ("SQ01_UNDLM_00413_v001.mov", 147 * MB),
    ("SQ02_UNDLM_00001_v001.mp4", 61 * MB),
    ("audio/SQ01_mix_v003.wav", 38 * MB),
    ("notes/edit_notes.pdf", 48_213),
];
/// The next version of the first shot: stacked on its v001 once it is in.
const NEXT_VERSION: (&str, u64) = ("SQ01_UNDLM_00412_v002.mov", 191 * MB);
/// A long shot, pulled while the picture is taken.
const LONG: (&str, u64) = ("SQ01_UNDLM_00415_v001.mov", 2_400 * MB);
/// A render still writing its file when the picture is taken.
const RENDERING: &str = "SQ01_UNDLM_00416_v001.mov";

#[test]
#[ignore = "writes the README's screenshot: run `make screenshots`"]
fn the_readme_screenshot_shows_a_real_run() {
    let out_dir = std::env::var_os("SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"));
    let sandbox = Sandbox::new("screenshots");
    let registry = sandbox.dir.join("tunnel-registry");
    std::fs::create_dir_all(&registry).unwrap();
    let reg = registry.clone();
    let sim = start_sim(move |o| o.tunnel_registry = Some(reg));

    let mut config = config_for(&sandbox, &sim);
    config["watch"] = json!({ "root": STUDIO_ROOT, "settle_secs": 5, "rescan_secs": 10 });
    config["layout"] = json!({
        "pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
        "folders": "{seq}/UNDLM_{shot}",
        "unmatched": "mirror",
    });
    config["tunnel"] = json!({ "mode": "quick", "cloudflared": fake_cloudflared() });
    config["serve"] = json!({ "listen": format!("127.0.0.1:{}", port_or_free(8081)) });
    let dashboard = format!("127.0.0.1:{}", port_or_free(8080));
    config["dashboard"] = json!({ "listen": dashboard });
    seed_tokens(&sim, &sandbox.state_dir(), None);
    let config_path = sandbox.write_config(&config);

    let mut postflow = spawn_in_studio_namespace(&sandbox, &config_path, &registry);
    let api = Api {
        base: format!("http://{dashboard}"),
    };
    wait_until(Duration::from_secs(60), "the quick tunnel", || {
        sandbox.log().contains("tunnel up: https://")
    });
    // Before any export arrives, so that none is a first start's baseline.
    wait_until(Duration::from_secs(30), "the first scan", || {
        api.get("/api/queue/stats")
            .is_some_and(|q| !q["watched_files"].is_null())
    });

    let exports = sandbox.watch_root();
    for (i, (rel, size)) in FIRST.iter().enumerate() {
        make_file(&exports.join(rel), *size, i as u32 + 1);
    }
    api.wait_done(FIRST.len(), &sandbox);
    make_file(&exports.join(NEXT_VERSION.0), NEXT_VERSION.1, 11);
    wait_until(Duration::from_secs(180), "v002 stacked on v001", || {
        api.jobs().iter().any(|j| {
            j["name"] == NEXT_VERSION.0 && j["state"] == "done" && j["stack"]["state"] == "stacked"
        })
    });
    make_file(&exports.join(LONG.0), LONG.1, 12);
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let path = exports.join(RENDERING);
        let writing = writing.clone();
        std::thread::spawn(move || write_slowly(&path, &writing))
    };
    wait_until(
        Duration::from_secs(180),
        "the long shot a sixth pulled",
        || {
            api.get("/api/status").is_some_and(|s| {
                s["transfers"].as_array().is_some_and(|ts| {
                    ts.iter().any(|t| {
                        t["name"] == LONG.0 && t["covered"].as_u64().unwrap_or(0) > LONG.1 / 6
                    })
                })
            })
        },
    );

    let mut b = Browser::launch(1280, 900);
    b.navigate(&format!("http://{dashboard}/"));
    b.wait_for(
        "the live connection",
        "document.getElementById('conn').textContent === 'live'",
    );
    b.wait_for(
        "the long shot's transfer",
        &format!(
            "[...document.querySelectorAll('.transfer')].some(t => t.textContent.includes('{}'))",
            LONG.0
        ),
    );
    b.wait_for_within(
        Duration::from_secs(60),
        "the render still being written",
        "document.body.innerText.includes('size changing')",
    );
    let text = b.text();
    for shown in [
        STUDIO_ROOT,
        "trycloudflare.com",
        "v002, stacked on v001",
        "SQ01/UNDLM_00412",
        "audio",
        "notes",
    ] {
        assert!(
            text.contains(shown),
            "the page does not show {shown:?}:\n{text}"
        );
    }
    let machine_paths = [
        env!("CARGO_MANIFEST_DIR"),
        env!("CARGO_TARGET_TMPDIR"),
        &sandbox.dir.display().to_string(),
        "/tmp/",
        "/home/",
        "/root",
    ];
    for path in machine_paths {
        assert!(!text.contains(path), "the page shows {path:?}:\n{text}");
    }
    assert!(
        !text.contains("<img") && !text.contains("</"),
        "markup shown as text:\n{text}"
    );
    let folders =
        b.eval("[...document.querySelectorAll('#jobs tr')].map(r => r.children[2].textContent)");
    let folders: Vec<&str> = folders
        .as_array()
        .expect("the jobs table")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(folders.len(), FIRST.len() + 3, "job rows: {folders:?}");
    assert!(
        folders.iter().all(|f| !f.is_empty() && *f != "/"),
        "a job without its Frame.io folder: {folders:?}"
    );

    let shot = out_dir.join("screenshot.png");
    b.screenshot(&shot);
    println!("screenshots: wrote {}", shot.display());

    // The history: the run's minutes and today's totals drawn, the finished exports listed.
    b.eval("location.hash = 'history'");
    b.wait_for(
        "the charts and the history",
        "document.querySelectorAll('#rate-chart rect[data-bytes]').length > 0 && \
         document.querySelectorAll('#day-chart rect[data-files]').length === 30 && \
         document.querySelectorAll('#h-rows tr[data-history]').length >= 6",
    );
    // A bar's figures, as a tap shows them: the busiest minute.
    b.eval(
        "(() => { const bars = [...document.querySelectorAll('#rate-chart rect[data-bytes]')]; \
         const top = bars.reduce((a, c) => +c.dataset.bytes > +a.dataset.bytes ? c : a); \
         const r = top.getBoundingClientRect(); \
         document.getElementById('rate-chart').dispatchEvent(new MouseEvent('click', \
         { clientX: r.left + r.width / 2, clientY: r.top + 1, bubbles: true })); })()",
    );
    let shot = out_dir.join("screenshot-history.png");
    b.screenshot(&shot);
    println!("screenshots: wrote {}", shot.display());

    // On a phone: the live view, nothing wider than the screen.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    );
    b.eval("location.hash = 'now'");
    b.wait_for(
        "the phone layout without sideways scrolling",
        "document.getElementById('view-now').offsetParent !== null && \
         document.documentElement.scrollWidth <= window.innerWidth",
    );
    let shot = out_dir.join("screenshot-phone.png");
    b.screenshot(&shot);
    println!("screenshots: wrote {}", shot.display());

    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    signal(postflow.id(), "TERM");
    let status = wait_exit(&mut postflow, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", sandbox.log());
}

/// `port` when it is free on loopback (the defaults read best on the page), else any free one.
fn port_or_free(port: u16) -> u16 {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => free_port(),
    }
}

/// `postflow run CONFIG` in a mount namespace of its own where the sandbox's watch folder is
/// mounted at `STUDIO_ROOT` (on a tmpfs over `/mnt`, which hides nothing outside it). Without
/// root, a user namespace makes that possible. `unshare` execs, so the pid is postflow's.
fn spawn_in_studio_namespace(sandbox: &Sandbox, config: &Path, registry: &Path) -> Child {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let mut unshare = Command::new("unshare");
    unshare.args(["--mount", "--propagation", "private"]);
    if !root {
        unshare.arg("--map-root-user");
    }
    let probe = Command::new("unshare")
        .args(unshare.get_args())
        .arg("true")
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "make screenshots runs postflow in a mount namespace of its own, so that the page \
             shows a studio's watch folder ({STUDIO_ROOT}) instead of this machine's paths, and \
             `unshare {}` failed: {}(user namespaces may be off: \
             sysctl kernel.unprivileged_userns_clone=1, or run it as root)",
            unshare
                .get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("make screenshots needs `unshare` (util-linux): {e}"),
    }
    unshare
        .args([
            "sh",
            "-c",
            r#"mount -t tmpfs tmpfs /mnt && mkdir -p "$3" && mount --bind "$0" "$3" && exec "$1" run "$2""#,
        ])
        .arg(sandbox.watch_root())
        .arg(env!("CARGO_BIN_EXE_postflow"))
        .arg(config)
        .arg(STUDIO_ROOT)
        .current_dir(&sandbox.dir)
        .env_remove("RUST_LOG")
        .env_remove("POSTFLOW_CLIENT_SECRET")
        .env("SIM_TUNNEL_REGISTRY", registry)
        .env("FAKE_CLOUDFLARED_RATE", UPLINK_BYTES_PER_SEC.to_string())
        .stdin(Stdio::null());
    let child = spawn_logged(&mut unshare, &sandbox.log_path());
    sandbox.track(&child);
    sandbox.wait_for_lock_owner(child.id());
    child
}

/// A render writing a QuickTime file in place, a megabyte a second, until told to stop.
fn write_slowly(path: &Path, writing: &AtomicBool) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut head = Vec::new();
    head.extend_from_slice(&20u32.to_be_bytes());
    head.extend_from_slice(b"ftypqt  \0\0\0\0qt  ");
    head.extend_from_slice(&8u32.to_be_bytes());
    head.extend_from_slice(b"mdat");
    f.write_all(&head).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    while writing.load(Ordering::Relaxed) {
        f.write_all(&chunk).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The running instance's API.
struct Api {
    base: String,
}

impl Api {
    fn get(&self, path: &str) -> Option<Value> {
        let mut resp = ureq::get(&format!("{}{path}", self.base)).call().ok()?;
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    }

    fn jobs(&self) -> Vec<Value> {
        self.get("/api/jobs?limit=1000")
            .and_then(|b| b["jobs"].as_array().cloned())
            .unwrap_or_default()
    }

    fn wait_done(&self, n: usize, sandbox: &Sandbox) {
        let done = || self.jobs().iter().filter(|j| j["state"] == "done").count();
        let start = std::time::Instant::now();
        while done() < n {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{} of {n} exports done after 3 minutes; log:\n{}",
                done(),
                sandbox.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
