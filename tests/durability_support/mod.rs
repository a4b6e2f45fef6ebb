//! The state dir on a small tmpfs of its own: a mount namespace held by a sleeping process,
//! postflow started inside it with `nsenter`, and the test filling, freeing and remounting the
//! tmpfs from outside. Needs root (mounts, namespaces); plumbing only, no assertions about
//! the product.
#![allow(dead_code)] // each test uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::wait_until;
use crate::upload_support::{spawn_logged, Rig};

/// A tmpfs mounted over the sandbox's state dir in a private mount namespace. What the state
/// dir held before (tokens.json) is copied in. Dropping it ends the namespace's holder.
pub struct StateMount {
    holder: Child,
    /// The state dir as postflow sees it.
    pub state: PathBuf,
}

impl StateMount {
    /// Mounts a tmpfs of `size` (as `mount -o size=` spells it) over `rig`'s state dir.
    /// Panics (never skips) when namespaces or mounts are not available.
    pub fn new(rig: &Rig, size: &str) -> StateMount {
        let state = rig.sandbox.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        let script = r#"set -e
            cp -a "$STATE" "$STATE.seed"
            mount -t tmpfs -o "size=$SIZE,mode=0700" postflow-state "$STATE"
            cp -a "$STATE.seed/." "$STATE/"
            echo ready
            exec sleep 100000"#;
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .env("STATE", &state)
            .env("SIZE", size)
            .current_dir(&rig.sandbox.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut line = String::new();
        let read = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        assert!(
            read.is_ok() && line.trim() == "ready",
            "could not mount a tmpfs in a private mount namespace (these tests need root: \
             `make test-durability`); the holder said {line:?}"
        );
        StateMount { holder, state }
    }

    /// The state dir as seen from outside the namespace: through the holder's root link, which
    /// resolves paths in its own mount namespace.
    pub fn inside(&self) -> PathBuf {
        let rel = self.state.strip_prefix("/").unwrap();
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(rel)
    }

    /// Starts `postflow run` inside the namespace (the log goes to the sandbox's log).
    pub fn start(&self, rig: &Rig) -> Child {
        let config = rig.sandbox.write_config(&rig.config);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.id()))
            .arg("--mount")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_postflow"))
            .arg("run")
            .arg(&config)
            .current_dir(&rig.sandbox.dir)
            .env_remove("RUST_LOG")
            .env_remove("POSTFLOW_CLIENT_SECRET")
            .envs(rig.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let child = spawn_logged(&mut cmd, &rig.sandbox.log_path());
        let lock = self.inside().join("lock");
        let pid = child.id().to_string();
        wait_until(Duration::from_secs(20), "postflow to take the lock", || {
            std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid)
        });
        child
    }

    /// Fills the tmpfs until a write fails, then gives back `leave` bytes.
    pub fn fill_leaving(&self, leave: u64) {
        let path = self.inside().join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0xAAu8; 64 * 1024];
        let mut small = false;
        loop {
            let piece = if small { &chunk[..4096] } else { &chunk[..] };
            if f.write_all(piece).is_err() {
                if small {
                    break;
                }
                small = true;
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
    }

    /// Fills the tmpfs completely.
    pub fn fill(&self) {
        self.fill_leaving(0);
    }

    /// Frees what `fill` took.
    pub fn free(&self) {
        std::fs::remove_file(self.inside().join("filler")).unwrap();
    }

    /// Makes the state dir read-only (`true`) or writable again. Linux refuses to remount a
    /// file system read-only while a file on it is open for writing (postflow's journal is), so
    /// a read-only bind of the dir is stacked on it: every file opened from then on is refused
    /// with `Read-only file system`, as after a real remount; files already open stay writable.
    pub fn read_only(&self, read_only: bool) {
        let script = if read_only {
            r#"mount --bind "$STATE" "$STATE" && mount -o remount,bind,ro "$STATE""#
        } else {
            r#"umount "$STATE""#
        };
        let ok = Command::new("nsenter")
            .arg(format!("--target={}", self.holder.id()))
            .args(["--mount", "--", "sh", "-c", script])
            .env("STATE", &self.state)
            .status()
            .expect("run nsenter")
            .success();
        assert!(
            ok,
            "could not make {} read-only={read_only}",
            self.state.display()
        );
    }
}

impl Drop for StateMount {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `/health` of the running instance: (status code, body).
pub fn health(rig: &Rig) -> Option<(u16, serde_json::Value)> {
    let listen = rig.config["dashboard"]["listen"].as_str()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&format!("http://{listen}/health")).call().ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).ok()?))
}

/// Waits until `/health` answers `code`; returns its body.
pub fn wait_health(rig: &Rig, code: u16, limit: Duration) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let now = health(rig);
        if let Some((c, body)) = &now {
            if *c == code {
                return body.clone();
            }
        }
        assert!(
            start.elapsed() < limit,
            "/health never answered {code} within {limit:?}; last {now:?}\nlog:\n{}",
            rig.sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
