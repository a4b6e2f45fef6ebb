//! `postflow upload`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crossbeam_channel::bounded;

use super::pipeline::{NotStarted, Pipeline, Scope, Stop};
use super::{api_agent, dashboard_addr, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::ledger::{Job, JobState};
use crate::queue::QueueMsg;

/// `postflow upload CONFIG PATH…`: queues files inside a project's root now (the project is
/// the one whose root holds the file). A running instance
/// is asked through its API (`POST /api/jobs`) and the command returns at once; when none
/// runs, this process runs the pipeline for just these files and exits when each is done,
/// failed or skipped. A path that is not a file inside the root refuses the whole command
/// (exit 2) before anything is queued.
pub fn upload(config: Config, paths: &[PathBuf]) -> ExitCode {
    let files = match files_inside_root(&config, paths) {
        Ok(f) => f,
        Err(message) => {
            eprintln!("postflow upload: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match enqueue_in_running_instance(&config, &files) {
        Asked::Answered(code) => code,
        Asked::NotRunning => upload_one_off(&config, files),
    }
}

/// Each path made absolute (relative ones are relative to the current directory, as in any
/// command), canonical, a file, and inside a project's root; else what is wrong with the
/// first one that is not. The paths come back as people read them (`C:\x`, not `\\?\C:\x`):
/// they are printed and sent to a running instance, which makes them canonical again (and
/// finds each one's project the same way).
fn files_inside_root(config: &Config, paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    for p in &config.projects {
        std::fs::canonicalize(&p.root)
            .map_err(|e| format!("{} {}: {e}", p.root_key(), p.root.display()))?;
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let file = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.project_of(&file).is_none() {
            let roots: Vec<String> = config
                .projects
                .iter()
                .map(|p| format!("{} ({})", p.root_key(), p.root.display()))
                .collect();
            let (what, only) = match roots.len() {
                1 => (roots[0].clone(), "it"),
                _ => (format!("every project's root: {}", roots.join(", ")), "one"),
            };
            return Err(format!(
                "{} is outside {what}: only files inside {only} can be uploaded; nothing was \
                 queued",
                path.display(),
            ));
        }
        if !file.is_file() {
            return Err(format!(
                "{} is not a file; nothing was queued",
                path.display()
            ));
        }
        files.push(crate::paths::simplified(&file));
    }
    Ok(files)
}

enum Asked {
    /// The instance answered (or failed in a way worth reporting): exit with this.
    Answered(ExitCode),
    /// Nothing listens on `dashboard.listen`.
    NotRunning,
}

fn enqueue_in_running_instance(config: &Config, files: &[PathBuf]) -> Asked {
    let addr = dashboard_addr(config);
    if addr.port() == 0 {
        // A dashboard on a random port cannot be found: no instance can be asked.
        return Asked::NotRunning;
    }
    let url = format!("http://{addr}/api/jobs");
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let agent = api_agent();
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(token) = &config.dashboard.token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let fail = |message: String| {
        eprintln!("postflow upload: {message}");
        Asked::Answered(ExitCode::from(EXIT_FAILURE))
    };
    let mut resp = match req.send(serde_json::json!({ "paths": paths }).to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Asked::NotRunning
        }
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(results) = body["results"].as_array().filter(|_| status == 200) else {
        return fail(format!(
            "{url} answered {status}: {}",
            body["error"].as_str().unwrap_or(text.trim())
        ));
    };
    let mut all_ok = true;
    for r in results {
        let path = r["path"].as_str().unwrap_or("?");
        match r["id"].as_u64() {
            Some(id) => {
                println!("queued {path} (job {id}) in the running postflow at http://{addr}")
            }
            None => {
                all_ok = false;
                println!("not queued {path}: {}", r["error"].as_str().unwrap_or("?"));
            }
        }
    }
    Asked::Answered(ExitCode::from(if all_ok { EXIT_OK } else { EXIT_FAILURE }))
}

/// How long to wait for the queue's answer in a one-off upload (it answers in milliseconds
/// unless the disk hangs).
const QUEUE_ANSWER: Duration = Duration::from_secs(30);

/// No instance runs: run the pipeline until the files are done, failed or skipped.
fn upload_one_off(config: &Config, files: Vec<PathBuf>) -> ExitCode {
    let pipeline = match Pipeline::start(config, Scope::Enqueued) {
        Ok(p) => p,
        Err(NotStarted::AlreadyRunning(e)) => {
            eprintln!(
                "postflow upload: postflow is {e} but its dashboard does not answer on \
                 http://{}; try again when it does",
                dashboard_addr(config)
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(NotStarted::Exit(code)) => return code,
    };
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let (reply_tx, reply_rx) = bounded(1);
    let _ = pipeline.queue_tx.send(QueueMsg::Enqueue {
        paths: files,
        project: None,
        reply: reply_tx,
    });
    let mut ids = Vec::new();
    let mut code = EXIT_OK;
    match reply_rx.recv_timeout(QUEUE_ANSWER) {
        Ok(results) => {
            for (name, result) in names.iter().zip(results) {
                match result {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        println!("not queued {name}: {e}");
                        code = EXIT_FAILURE;
                    }
                }
            }
        }
        Err(_) => {
            log::error!("the queue did not answer");
            return pipeline.shut_down(EXIT_FAILURE);
        }
    }
    let queue = pipeline.queue_tx.clone();
    let finished = || -> Option<u8> {
        let (tx, rx) = bounded(1);
        queue.send(QueueMsg::Stats(tx)).ok()?;
        if rx.recv_timeout(QUEUE_ANSWER).ok()?.waiting_for_auth {
            println!(
                "Frame.io sign-in is needed: run `postflow auth {}`, then upload again",
                config.path.display()
            );
            return Some(EXIT_FAILURE);
        }
        let (tx, rx) = bounded(1);
        queue.send(QueueMsg::Jobs(tx)).ok()?;
        let jobs = rx.recv_timeout(QUEUE_ANSWER).ok()?;
        let ours: Vec<&Job> = jobs.iter().filter(|j| ids.contains(&j.id)).collect();
        let ended = |j: &&Job| {
            matches!(
                j.state,
                JobState::Done | JobState::Failed | JobState::Skipped
            )
        };
        if !ours.iter().all(ended) {
            return None;
        }
        let mut code = EXIT_OK;
        for job in ours {
            if job.state == JobState::Done {
                println!(
                    "uploaded {}{}",
                    job.path,
                    job.view_url
                        .as_deref()
                        .map(|u| format!(": {u}"))
                        .unwrap_or_default()
                );
            } else {
                code = EXIT_FAILURE;
                println!(
                    "not uploaded {} ({}): {}",
                    job.path,
                    job.state.as_str(),
                    job.reason.as_deref().unwrap_or("")
                );
            }
        }
        Some(code)
    };
    let ended = match pipeline.wait(Duration::from_millis(500), finished) {
        Stop::Finished(code) => code,
        // Interrupted: the jobs stay in the ledger, and the next `run` finishes them.
        Stop::Signal | Stop::ThreadDied => EXIT_FAILURE,
    };
    pipeline.shut_down(code.max(ended))
}
