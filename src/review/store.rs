//! `review.json` in the state dir: the webhooks postflow keeps (ids and secrets), the path
//! token they point at, and the comments seen on each job's file. Owned by the review
//! follower; written whole, owner-only and atomically (`private_file::write_atomic`), so a
//! crash leaves the old file or the new one. Bounded: [`MAX_PER_JOB`] comments per job,
//! [`MAX_JOBS`] jobs (the oldest ids go first).
//!
//! The dashboard reads the comments through a [`Board`] (a shared, read-mostly copy).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The file's name in the state dir.
pub const FILE: &str = "review.json";
/// Comments kept per job (the newest).
pub const MAX_PER_JOB: usize = 500;
/// Jobs whose comments are kept (the newest ids).
pub const MAX_JOBS: usize = 5_000;

/// One webhook postflow made (one per workspace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub account_id: String,
    pub workspace_id: String,
    pub id: String,
    pub secret: String,
    /// The URL Frame.io was last told.
    pub url: String,
}

/// A comment on a job's file, as the page and `GET /api/jobs/<id>/comments` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: String,
    /// The owner's name (or email); `None` for a guest reviewer.
    pub author: Option<String>,
    pub text: String,
    /// `HH:MM:SS:FF`, when the comment is on a frame.
    pub timecode: Option<String>,
    pub created_at: String,
    pub completed: bool,
}

impl Comment {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "author": self.author,
            "text": self.text,
            "timecode": self.timecode,
            "created_at": self.created_at,
            "completed": self.completed,
        })
    }
}

/// Everything in `review.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last segment of the webhooks' URL path: `/hooks/frameio/<path_token>`.
    #[serde(default)]
    pub path_token: String,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// The first catch-up has run: comments found later are news. Until then, comments
    /// already on files are recorded without a notification.
    #[serde(default)]
    pub caught_up: bool,
    /// Comments by job id.
    #[serde(default)]
    pub comments: BTreeMap<u64, Vec<Comment>>,
}

impl State {
    /// Reads `review.json` from `dir`; a missing file is a first start. A damaged one is
    /// set aside (`review.json.damaged`) and starts afresh: the webhooks are found again by
    /// name, comments fetched again without notifications.
    pub fn load(dir: &Path) -> State {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return State::default(),
            Err(e) => {
                log::warn!("review: cannot read {}: {e}", path.display());
                return State::default();
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "review: {} is damaged ({e}); set aside, starting afresh",
                    path.display()
                );
                let _ = std::fs::rename(&path, dir.join(format!("{FILE}.damaged")));
                State::default()
            }
        }
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::private_file::write_atomic(&dir.join(FILE), &bytes, |_| Ok(()))
    }

    /// Adds or updates a comment of `job`: `Some(true)` when it is new, `Some(false)` when it
    /// changed, `None` when it was known as it is.
    pub fn upsert(&mut self, job: u64, comment: Comment) -> Option<bool> {
        let list = self.comments.entry(job).or_default();
        let answer = match list.iter_mut().find(|c| c.id == comment.id) {
            Some(known) if *known == comment => None,
            Some(known) => {
                *known = comment;
                Some(false)
            }
            None => {
                list.push(comment);
                Some(true)
            }
        };
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        if list.len() > MAX_PER_JOB {
            let extra = list.len() - MAX_PER_JOB;
            list.drain(..extra);
        }
        while self.comments.len() > MAX_JOBS {
            self.comments.pop_first();
        }
        answer
    }

    pub fn knows(&self, job: u64, comment_id: &str) -> bool {
        self.comments
            .get(&job)
            .is_some_and(|l| l.iter().any(|c| c.id == comment_id))
    }
}

/// What the dashboard reads: the comments by job, kept in step by the follower.
#[derive(Clone, Default)]
pub struct Board {
    comments: Arc<RwLock<BTreeMap<u64, Vec<Comment>>>>,
    /// Where `review.json` is, to read it when no follower runs (review off).
    dir: Option<PathBuf>,
}

impl Board {
    pub fn new(dir: &Path) -> Board {
        Board {
            comments: Arc::default(),
            dir: Some(dir.to_path_buf()),
        }
    }

    /// The comments of a job, oldest first.
    pub fn comments(&self, job: u64) -> Vec<Comment> {
        let known = self
            .comments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job)
            .cloned();
        known.unwrap_or_default()
    }

    pub(crate) fn set(&self, job: u64, comments: Vec<Comment>) {
        self.comments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, comments);
    }

    pub(crate) fn replace(&self, all: BTreeMap<u64, Vec<Comment>>) {
        *self.comments.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// Loads what `review.json` holds (at start, before any follower).
    pub fn load(&self) {
        if let Some(dir) = &self.dir {
            self.replace(State::load(dir).comments);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(id: &str, at: &str) -> Comment {
        Comment {
            id: id.into(),
            author: Some("Ada".into()),
            text: "too dark".into(),
            timecode: Some("00:00:03:12".into()),
            created_at: at.into(),
            completed: false,
        }
    }

    #[test]
    fn comments_are_new_once_then_updated_and_bounded() {
        let mut s = State::default();
        assert_eq!(
            s.upsert(1, comment("c1", "2026-01-01T00:00:00Z")),
            Some(true)
        );
        assert_eq!(s.upsert(1, comment("c1", "2026-01-01T00:00:00Z")), None);
        let mut done = comment("c1", "2026-01-01T00:00:00Z");
        done.completed = true;
        assert_eq!(s.upsert(1, done), Some(false));
        for i in 0..MAX_PER_JOB + 10 {
            s.upsert(
                2,
                comment(&format!("x{i:04}"), &format!("2026-01-02T00:{i:04}")),
            );
        }
        assert_eq!(s.comments[&2].len(), MAX_PER_JOB);
        assert!(!s.knows(2, "x0000"));
        assert!(s.knows(2, &format!("x{:04}", MAX_PER_JOB + 9)));
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_starts_afresh() {
        let dir = crate::testutil::TempDir::new();
        let mut s = State {
            path_token: "tok".into(),
            caught_up: true,
            ..State::default()
        };
        s.upsert(3, comment("c", "2026"));
        s.save(&dir.0).unwrap();
        assert_eq!(State::load(&dir.0), s);
        std::fs::write(dir.0.join(FILE), b"{\"path_tok").unwrap();
        assert_eq!(State::load(&dir.0), State::default());
        assert!(dir.0.join("review.json.damaged").exists());
    }
}
