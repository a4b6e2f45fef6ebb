//! The resumable state of a local upload, beside the ledger: `<state_dir>/uploads/<job>.json`
//! (the Frame.io file id and its presigned part URLs, written once) and `<job>.done` (one line
//! per finished part, appended and fsynced as each part finishes).
//!
//! Kept out of the ledger on purpose: a big file has thousands of parts, and recording each
//! finished part in the job's ledger record would rewrite all the URLs every time. Only the
//! worker holding the job touches its files. The URLs are secrets (anyone holding one can
//! write that part): the files are created owner-only (`private_file`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parts::Part;
use crate::private_file;

/// What Frame.io returned for a local upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalPlan {
    pub file_id: String,
    pub media_type: String,
    pub parts: Vec<Part>,
    /// When the URLs were issued (unix seconds); they live 24 hours.
    pub issued_at: u64,
    /// The file version the plan is for.
    pub size: u64,
    pub mtime_ns: i64,
}

pub struct Sidecar {
    dir: PathBuf,
}

impl Sidecar {
    pub fn new(state_dir: &Path) -> Sidecar {
        Sidecar {
            dir: state_dir.join("uploads"),
        }
    }

    fn plan_path(&self, job: u64) -> PathBuf {
        self.dir.join(format!("{job}.json"))
    }

    fn done_path(&self, job: u64) -> PathBuf {
        self.dir.join(format!("{job}.done"))
    }

    /// Saves a new plan (and forgets any finished parts of an older one).
    pub fn save_plan(&self, job: u64, plan: &LocalPlan) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let _ = std::fs::remove_file(self.done_path(job));
        private_file::write_atomic(&self.plan_path(job), &serde_json::to_vec(plan)?, |_| Ok(()))
    }

    /// Whether a plan is saved for the job (a local upload's, until the job ends).
    pub fn has_plan(&self, job: u64) -> bool {
        self.plan_path(job).is_file()
    }

    /// The saved plan and the parts finished under it, if any.
    pub fn load(&self, job: u64) -> Option<(LocalPlan, Vec<usize>)> {
        let plan: LocalPlan =
            serde_json::from_slice(&std::fs::read(self.plan_path(job)).ok()?).ok()?;
        let done_text = std::fs::read_to_string(self.done_path(job)).unwrap_or_default();
        // Only whole lines count: a torn last line is a part we will simply send again.
        let mut done: Vec<usize> = done_text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&i: &usize| i < plan.parts.len())
            .collect();
        done.sort_unstable();
        done.dedup();
        Some((plan, done))
    }

    /// Records a finished part durably.
    pub fn record_done(&self, job: u64, index: usize) -> io::Result<()> {
        // Parts finish on several threads at once. One write of the whole line (`writeln!`
        // would write the number and the newline apart, and two threads could make "31\n\n"
        // of parts 3 and 1), and one thread at a time: an appending write is atomic on Linux
        // and Windows, but not everywhere (Wine seeks to the end and then writes, and lost a
        // part 1 time in 3 to that), and nothing here needs two at once.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let mut f = private_file::open_append(&self.done_path(job))?;
        {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(format!("{index}\n").as_bytes())?;
        }
        f.sync_data()
    }

    pub fn remove(&self, job: u64) {
        let _ = std::fs::remove_file(self.plan_path(job));
        let _ = std::fs::remove_file(self.done_path(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_finishing_on_many_threads_at_once_are_all_recorded() {
        let dir = std::env::temp_dir().join(format!("postflow-sidecar-mt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sc = Sidecar::new(&dir);
        let parts = 64;
        let plan = LocalPlan {
            file_id: "f".into(),
            media_type: "video/quicktime".into(),
            parts: (0..parts)
                .map(|i| Part {
                    url: format!("https://s3/p{i}"),
                    size: 1,
                })
                .collect(),
            size: parts as u64,
            mtime_ns: 1,
            issued_at: 0,
        };
        sc.save_plan(9, &plan).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let sc = &sc;
                s.spawn(move || {
                    for i in (t..parts).step_by(8) {
                        sc.record_done(9, i).unwrap();
                    }
                });
            }
        });
        let (_, done) = sc.load(9).unwrap();
        assert_eq!(done, (0..parts).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plans_and_finished_parts_survive_and_a_torn_line_is_ignored() {
        let dir = std::env::temp_dir().join(format!("postflow-sidecar-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sc = Sidecar::new(&dir);
        assert!(sc.load(7).is_none());
        let plan = LocalPlan {
            file_id: "f".into(),
            media_type: "video/quicktime".into(),
            parts: (0..4)
                .map(|i| Part {
                    url: format!("https://s3/part_{i}?sig"),
                    size: 10,
                })
                .collect(),
            issued_at: 1,
            size: 40,
            mtime_ns: 5,
        };
        sc.save_plan(7, &plan).unwrap();
        sc.record_done(7, 2).unwrap();
        sc.record_done(7, 0).unwrap();
        sc.record_done(7, 2).unwrap();
        // A torn last line (no newline); the handle is closed at once, as a crashed writer's
        // is, so that Windows can remove the file when a new plan starts over.
        std::fs::OpenOptions::new()
            .append(true)
            .open(sc.done_path(7))
            .unwrap()
            .write_all(b"3")
            .unwrap();
        let (loaded, done) = sc.load(7).unwrap();
        assert_eq!(loaded, plan);
        assert_eq!(done, vec![0, 2]);
        assert!(
            !private_file::readable_by_others(&sc.plan_path(7)),
            "part URLs are secrets"
        );
        sc.save_plan(7, &plan).unwrap();
        assert_eq!(
            sc.load(7).unwrap().1,
            Vec::<usize>::new(),
            "a new plan starts clean"
        );
        sc.remove(7);
        assert!(sc.load(7).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
