//! The page in a real browser: headless Chromium (see `chromium.rs`) loads the dashboard
//! while a job runs and checks what it shows.
//!
//! Ignored by a plain `cargo test` (it needs Chromium); `make test-browser` installs Chromium
//! when missing and runs it. Its screenshot goes to `target/tmp/browser-test.png`, for a
//! person to look at: the README's pictures come from `make screenshots` instead.

#[path = "../dashboard_support/mod.rs"]
mod dashboard_support;

mod chromium;

use std::path::Path;
use std::time::{Duration, Instant};

use chromium::Browser;
use dashboard_support::Pipeline;
use postflow::events::{ComponentState, Event};
use postflow::queue::AttemptUpdate;
use serde_json::json;

const EVIL_NAME: &str = "<img src=x onerror=alert(1)>.mov";

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
        verified: None,
    });
    p.report(AttemptUpdate::Done {
        id: done_id,
        file_id: "f-10".into(),
        view_url: Some("https://next.frame.io/project/p/view/f-10".into()),
        verified: None,
        sha256: None,
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

    let mut b = Browser::launch(1280, 1000);
    b.navigate(&format!("http://{}/", p.addr));
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
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test.png");
    b.screenshot(&shot);
    println!("the page as the test saw it: {}", shot.display());

    // The final state arrives live too.
    p.transfer(running, 8_000_000, 8_000_000);
    p.report(AttemptUpdate::Processing {
        id: running,
        all_in_ms: postflow::queue::now_ms(),
        verified: None,
    });
    p.report(AttemptUpdate::Done {
        id: running,
        file_id: "f-20".into(),
        view_url: Some("https://next.frame.io/project/p/view/f-20".into()),
        verified: None,
        sha256: None,
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
    assert!(b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .contains("Frame.io said: <b>unsupported</b>"));

    // The history view: the charts drawn from /api/throughput, the search finds a file.
    postflow::throughput::count_sent(7_340_032);
    let throughput = p.get("/api/throughput").json();
    let minute = throughput["minutes"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    b.eval("location.hash = 'history'");
    b.wait_for(
        "the 24 h chart with the minute's bar",
        &format!(
            "!!document.querySelector('#rate-chart rect[data-start=\"{}\"]')",
            minute["start"].as_str().unwrap()
        ),
    );
    let bar = format!(
        "document.querySelector('#rate-chart rect[data-start=\"{}\"]')",
        minute["start"].as_str().unwrap()
    );
    assert_eq!(
        b.eval(&format!("{bar}.dataset.bytes")),
        minute["bytes"].to_string()
    );
    let title = b.eval(&format!("{bar}.querySelector('title').textContent"));
    assert!(
        title
            .as_str()
            .unwrap()
            .contains(&human_size(minute["bytes"].as_u64().unwrap())),
        "{title} for {minute}"
    );
    // A tap on the bar shows its figures under the chart.
    b.eval(&format!(
        "(() => {{ const r = {bar}.getBoundingClientRect(); \
         document.getElementById('rate-chart').dispatchEvent(new MouseEvent('click', \
         {{ clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true }})); }})()"
    ));
    assert_eq!(
        b.eval("document.getElementById('rate-info').textContent"),
        title
    );
    // With an upload limit, the chart draws it over the bars (bytes per minute, as the bars).
    let set = p.request(
        "POST",
        "/api/bandwidth",
        &[("Content-Type", "application/json")],
        br#"{"limit": "8M"}"#,
    );
    assert_eq!(set.status, 200, "{}", set.text());
    b.eval("loadThroughput()");
    b.wait_for(
        "the upload limit drawn over the 24 h chart",
        "document.querySelector('#rate-chart line.limit')?.dataset.limitBps === '8388608'",
    );
    let off = p.request(
        "POST",
        "/api/bandwidth",
        &[("Content-Type", "application/json")],
        br#"{"limit": "off"}"#,
    );
    assert_eq!(off.status, 200, "{}", off.text());
    let today = throughput["days"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(today["files"], 2, "{throughput}");
    assert_eq!(today["failed"], 1, "{throughput}");
    b.wait_for(
        "today's bar with today's figures",
        &format!(
            "(() => {{ const d = document.querySelector('#day-chart rect[data-date=\"{}\"]'); \
             return !!d && d.dataset.files === '2' && d.dataset.failed === '1' && \
             d.dataset.bytes === '{}'; }})()",
            today["date"].as_str().unwrap(),
            today["bytes"]
        ),
    );
    b.wait_for(
        "every finished job in the history",
        "document.querySelectorAll('#h-rows tr[data-history]').length === 3",
    );
    b.eval(
        "document.getElementById('h-q').value = '00020'; \
         document.getElementById('history-form').requestSubmit()",
    );
    b.wait_for(
        "the search finding one file",
        &format!(
            "document.querySelectorAll('#h-rows tr[data-history]').length === 1 && \
             !!document.querySelector('#h-rows tr[data-history=\"{running}\"]')"
        ),
    );
    assert!(b
        .eval("document.getElementById('h-csv').getAttribute('href')")
        .as_str()
        .unwrap()
        .ends_with("?q=00020"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test-history.png");
    b.screenshot(&shot);

    // Readable on a phone: on every view nothing is wider than the screen, and every control
    // is a thumb's size.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    );
    for view in ["now", "history"] {
        b.eval(&format!("location.hash = '{view}'"));
        b.wait_for(
            &format!("the {view} view on a phone without sideways scrolling"),
            &format!(
                "document.getElementById('view-{view}').offsetParent !== null && \
                 document.querySelectorAll('main').length === 2 && \
                 [...document.querySelectorAll('main')].filter(m => m.offsetParent !== null) \
                 .length === 1 && \
                 document.documentElement.scrollWidth <= window.innerWidth"
            ),
        );
        let small = b.eval(
            "[...document.querySelectorAll('button, select, input, a, summary')] \
             .filter(e => e.offsetParent !== null) \
             .filter(e => e.getBoundingClientRect().height < 44) \
             .map(e => e.outerHTML.slice(0, 80))",
        );
        assert_eq!(small, json!([]), "{view}: controls under 44 px on a phone");
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test-phone.png");
    b.screenshot(&shot);
}

/// The page's `size()`: decimal units, one decimal.
fn human_size(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let (mut v, mut i) = (n as f64, 0);
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
