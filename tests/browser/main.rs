//! The page in a real browser: headless Chromium, driven over the DevTools protocol (a
//! WebSocket, so tungstenite is all we need), loads the dashboard while a job runs.
//!
//! Ignored by a plain `cargo test` (it needs Chromium); `make test-browser` installs Chromium
//! when missing and runs it. `CHROMIUM` names the binary (default: `chromium`, then
//! `chromium-browser`, `google-chrome`). The screenshot goes to `docs/screenshot.png`.

#[path = "../dashboard_support/mod.rs"]
mod dashboard_support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dashboard_support::{raw_request, Pipeline};
use postflow::events::{ComponentState, Event};
use postflow::queue::AttemptUpdate;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const EVIL_NAME: &str = "<img src=x onerror=alert(1)>.mov";

struct Browser {
    _process: Chromium,
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

/// The Chromium process and its profile, ended and removed however the test ends.
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn chromium_binary() -> String {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return c.to_string();
        }
    }
    panic!("no Chromium found: run `make test-browser`, which installs it, or set CHROMIUM");
}

impl Browser {
    fn launch() -> Browser {
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chromium-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Chromium");
        let process = Chromium { child, profile };
        // Chromium writes the port it chose, then the browser target's path.
        let port_file = process.profile.join("DevToolsActivePort");
        let start = Instant::now();
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.parse().ok()))
            {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Chromium did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let host = format!("127.0.0.1:{port}");
        let targets = raw_request(addr, "GET", "/json/list", &[("Host", &host)], b"").json();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools WebSocket");
        let mut b = Browser {
            _process: process,
            ws,
            next_id: 0,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Calls a DevTools method and waits for its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(t) = self.ws.read().expect("DevTools answer") else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page (an exception counts as not yet: the page may
    /// still be loading).
    fn wait_for(&mut self, what: &str, expr: &str) {
        let start = Instant::now();
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return false; }} }})()");
        while self.eval(&guarded) != json!(true) {
            let text = self.eval("document.body ? document.body.innerText : ''");
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page never showed {what}; it shows:\n{}",
                text.as_str().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Waits until the queue says `id` is in `state`.
fn wait_state(p: &Pipeline, id: u64, state: &str) {
    let start = Instant::now();
    while !p.get(&format!("/api/jobs?state={state}")).json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == id)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job {id} never {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs Chromium: run `make test-browser`"]
fn the_page_shows_a_running_job_move_live_and_names_as_text() {
    let p = Pipeline::start("browser");
    let hub = &p.hub;
    hub.publish(Event::Component {
        name: "watcher",
        state: ComponentState::Up,
        detail: "/mnt/lucid/exports · 3 files".into(),
    });
    hub.publish(Event::Component {
        name: "tunnel",
        state: ComponentState::Up,
        detail: "https://blue-river-42.trycloudflare.com".into(),
    });
    hub.publish(Event::Component {
        name: "server",
        state: ComponentState::Up,
        detail: "127.0.0.1:8081".into(),
    });
    hub.publish(Event::Component {
        name: "auth",
        state: ComponentState::Up,
        detail: "editor@example.com".into(),
    });
    let done_id = p.add_file("SQ01_UNDLM_00010_v001.mov", 3000);
    let job = p.take_job();
    assert_eq!(job.id, done_id);
    p.report(AttemptUpdate::Started {
        id: done_id,
        mode: "remote",
    });
    p.report(AttemptUpdate::Processing {
        id: done_id,
        all_in_ms: postflow::queue::now_ms(),
    });
    p.report(AttemptUpdate::Done {
        id: done_id,
        file_id: "f-10".into(),
        view_url: Some("https://next.frame.io/project/p/view/f-10".into()),
    });
    let evil = p.add_file(EVIL_NAME, 2000);
    let running = p.add_file("SQ01_UNDLM_00020_v002.mov", 8_000_000);
    assert_eq!(p.take_job().id, evil);
    p.report(AttemptUpdate::Started {
        id: evil,
        mode: "local",
    });
    p.report(AttemptUpdate::Failed {
        id: evil,
        error: "Frame.io said: <b>unsupported</b>".into(),
        kind: postflow::queue::FailureKind::Permanent,
    });
    assert_eq!(p.take_job().id, running);
    p.report(AttemptUpdate::Started {
        id: running,
        mode: "remote",
    });
    wait_state(&p, running, "uploading");
    p.transfer(running, 2_000_000, 8_000_000);

    let mut b = Browser::launch();
    b.call(
        "Page.navigate",
        json!({ "url": format!("http://{}/", p.addr) }),
    );
    b.wait_for(
        "the live connection",
        "document.getElementById('conn').textContent === 'live'",
    );
    b.wait_for(
        "the transfer at 25 %",
        "!!document.querySelector('.transfer[data-job] .top') && \
         document.querySelector('.transfer .top').textContent.includes('25%')",
    );

    // Progress moves live.
    p.transfer(running, 6_000_000, 8_000_000);
    b.wait_for(
        "the transfer at 75 %",
        "document.querySelector('.transfer .top').textContent.includes('75%') && \
         parseFloat(document.querySelector('.transfer .bar > div').style.width) === 75",
    );
    b.wait_for(
        "the done job with its Frame.io link",
        &format!(
            "!!document.querySelector('tr[data-job=\"{done_id}\"] a[href=\"https://next.frame.io/project/p/view/f-10\"]')"
        ),
    );
    b.screenshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png"));

    // The final state arrives live too.
    p.transfer(running, 8_000_000, 8_000_000);
    p.report(AttemptUpdate::Processing {
        id: running,
        all_in_ms: postflow::queue::now_ms(),
    });
    p.report(AttemptUpdate::Done {
        id: running,
        file_id: "f-20".into(),
        view_url: Some("https://next.frame.io/project/p/view/f-20".into()),
    });
    b.wait_for(
        "the running job done",
        &format!(
            "document.querySelector('tr[data-job=\"{running}\"] .pill').textContent === 'done' && \
             !document.querySelector('.transfer[data-job]')"
        ),
    );

    // The hostile file name is text, never markup.
    let name_cell = b.eval(&format!(
        "document.querySelector('tr[data-job=\"{evil}\"] td.name').textContent"
    ));
    assert_eq!(name_cell, EVIL_NAME);
    assert_eq!(b.eval("document.querySelectorAll('img').length"), 0);
    assert_eq!(
        b.eval("document.querySelectorAll('td b, td img').length"),
        0
    );
    // Readable on a phone: nothing wider than the screen.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    );
    b.wait_for(
        "the phone layout without sideways scrolling",
        "document.documentElement.scrollWidth <= 391",
    );
    assert!(b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .contains("Frame.io said: <b>unsupported</b>"));
}
