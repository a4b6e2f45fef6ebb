//! Remote uploads through a quick tunnel (the fake cloudflared stand-in, with the simulator
//! resolving `*.trycloudflare.com` through the shared registry), and a tunnel whose URL
//! changes while Frame.io is about to pull.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sim_bins::fake_cloudflared;
use serde_json::json;
use upload_support::{stop, Rig};

/// A remote-mode rig on a quick tunnel; `cloudflared` is the program postflow starts.
fn quick_rig(name: &str, cloudflared: impl FnOnce(&Path) -> PathBuf) -> Rig {
    // Beside the sandbox (which starts empty, so it cannot hold what the sim needs first).
    let registry = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&registry);
    std::fs::create_dir_all(&registry).unwrap();
    let reg = registry.clone();
    let mut rig = Rig::new(name, "remote", move |o| o.tunnel_registry = Some(reg));
    let program = cloudflared(&rig.sandbox.dir);
    rig.config["tunnel"] = json!({ "mode": "quick", "cloudflared": program });
    rig.env("SIM_TUNNEL_REGISTRY", registry.display().to_string());
    rig.env("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200");
    rig.env("POSTFLOW_POLL_MS", "200");
    rig
}

fn wait_tunnel_up(rig: &Rig, times: usize) {
    common::wait_until(Duration::from_secs(30), "the quick tunnel", || {
        rig.sandbox.log().matches("tunnel up: https://").count() >= times
    });
}

#[test]
fn remote_uploads_go_through_a_quick_tunnel() {
    let rig = quick_rig("up-quick", |_| fake_cloudflared());
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let expected = BTreeMap::from([
        ("a/one.mov".to_string(), rig.make("a/one.mov", 400_000, 1)),
        ("two.wav".to_string(), rig.make("two.wav", 70_000, 2)),
    ]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    for f in rig.sim.files() {
        let source = f.source_url.unwrap_or_default();
        assert!(
            source.starts_with("https://") && source.contains(".trycloudflare.com/f/"),
            "{source}\n{log}"
        );
    }
}

#[test]
fn a_tunnel_url_change_mid_transfer_redoes_the_pull_on_the_new_url() {
    // The first cloudflared crashes after 5 s (while Frame.io waits to pull); the ones after
    // it stay up. postflow restarts it and gets a new hostname.
    let rig = quick_rig("up-quick-change", |dir| {
        let script = dir.join("cloudflared-crashing-once");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ \"$1\" = tunnel ] && mkdir \"{marker}\" 2>/dev/null; then\n\
                 \x20 FAKE_CLOUDFLARED_MODE=crash-after=5; export FAKE_CLOUDFLARED_MODE\n\
                 fi\n\
                 exec \"{real}\" \"$@\"\n",
                marker = dir.join("crashed-once").display(),
                real = fake_cloudflared().display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        script
    });
    rig.sim.set_faults(|f| f.fetch_delay_ms = 30_000);
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let expected = BTreeMap::from([("moving.mov".to_string(), rig.make("moving.mov", 300_000, 3))]);
    common::wait_until(Duration::from_secs(30), "the URL change", || {
        rig.sandbox
            .log()
            .contains("the tunnel's public URL changed")
    });
    rig.sim.set_faults(|f| f.fetch_delay_ms = 0);
    wait_tunnel_up(&rig, 2);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    let first_url = log
        .split("tunnel up: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let source = rig.sim.files()[0].source_url.clone().unwrap();
    assert!(
        source.starts_with("https://") && !source.starts_with(first_url),
        "pulled from {source}, the first URL was {first_url}\n{log}"
    );
    assert_eq!(
        rig.sim.request_count("remote_upload", Some(202)),
        2,
        "one pull asked on the old URL, one on the new\n{log}"
    );
}
