//! Which project is which from one start to the next: `<state_dir>/projects.json` records
//! each project's name with what makes it that project (its root as the OS resolves it, its
//! Frame.io account and project). At start, a project of the config that the ledger has no
//! job of, whose root and Frame.io project are those of a recorded project the config no
//! longer names, is that project renamed: its jobs take the new name (one ledger batch)
//! before anything else starts, so nothing is uploaded again and nothing that arrived while
//! postflow was stopped is taken for a first-start baseline. Converting a config into
//! `projects` keeping the root and Frame.io project is such a rename of `default`.
//!
//! Any other project the ledger has no job of is new: its first start records what its
//! root holds as the baseline (`watch.upload_existing`), as the very first start does. A
//! project removed from the config keeps its jobs and its record (naming it again, or a
//! project with its root and Frame.io project, takes them back).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ProjectConfig;
use crate::ledger::{Job, Ledger};

/// The file in the state dir.
pub const FILE: &str = "projects.json";

/// What makes a project that project, whatever it is called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub root: String,
    pub account_id: String,
    pub project_id: String,
}

impl Identity {
    pub fn of(project: &ProjectConfig) -> Identity {
        let root = std::fs::canonicalize(&project.root).unwrap_or_else(|_| project.root.clone());
        Identity {
            root: root.to_string_lossy().into_owned(),
            account_id: project.account_id.clone(),
            project_id: project.project_id.clone(),
        }
    }
}

/// A project found under a new name: (old name, new name, jobs moved).
pub type Renamed = (String, String, usize);

/// Reads the record, renames what was renamed (see the module doc) and records the projects
/// of this config. An unreadable record counts as none (nothing is renamed then: a renamed
/// project gets a first-start baseline, which uploads nothing again either).
pub fn reconcile(
    state_dir: &Path,
    ledger: &mut Ledger,
    projects: &[ProjectConfig],
) -> io::Result<Vec<Renamed>> {
    let file = state_dir.join(FILE);
    let mut known: BTreeMap<String, Identity> = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let renames = renames(&known, ledger.jobs(), projects);
    let mut done = Vec::new();
    for (old, new) in renames {
        let moved: Vec<Job> = ledger
            .jobs()
            .values()
            .filter(|j| j.project == old)
            .map(|j| Job {
                project: new.clone(),
                ..j.clone()
            })
            .collect();
        ledger.write(&moved)?;
        done.push((old, new, moved.len()));
    }
    for p in projects {
        known.insert(p.name.clone(), Identity::of(p));
    }
    let text = serde_json::to_vec_pretty(&known).map_err(io::Error::other)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &file)?;
    Ok(done)
}

/// (old name, new name) of each renamed project: a configured project with no job, and a
/// recorded, unconfigured project with jobs and the same identity.
fn renames(
    known: &BTreeMap<String, Identity>,
    jobs: &BTreeMap<u64, Job>,
    projects: &[ProjectConfig],
) -> Vec<(String, String)> {
    let with_jobs: BTreeSet<&str> = jobs.values().map(|j| j.project.as_str()).collect();
    let configured: BTreeSet<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for p in projects {
        if with_jobs.contains(p.name.as_str()) {
            continue;
        }
        let me = Identity::of(p);
        let old = known.iter().find(|(name, id)| {
            **id == me
                && with_jobs.contains(name.as_str())
                && !configured.contains(name.as_str())
                && !taken.contains(*name)
        });
        if let Some((old, _)) = old {
            taken.insert(old.clone());
            out.push((old.clone(), p.name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::GlobSet;
    use crate::testutil::TempDir;

    fn project(name: &str, root: &Path, project_id: &str) -> ProjectConfig {
        ProjectConfig {
            name: name.into(),
            root: root.to_path_buf(),
            account_id: "acc".into(),
            project_id: project_id.into(),
            folder: String::new(),
            layout: crate::config::LayoutConfig {
                pattern: None,
                folders: None,
                mirror_unmatched: false,
                stack_versions: false,
            },
            notify: crate::config::NotifyConfig {
                webhook_url: None,
                format: crate::config::NotifyFormat::Json,
            },
            include: GlobSet::new(Vec::new()),
            exclude: GlobSet::new(Vec::new()),
            key: format!("projects[{name}]"),
        }
    }

    fn job(id: u64, project: &str) -> Job {
        let mut j: Job = serde_json::from_str(&format!(
            r#"{{"id":{id},"path":"a{id}.mov","size":1,"mtime_ns":1,"state":"done","created_ms":1,"updated_ms":1}}"#
        ))
        .unwrap();
        j.project = project.into();
        j
    }

    #[test]
    fn a_project_renamed_keeps_its_jobs_and_a_new_or_changed_one_does_not() {
        let dir = TempDir::new();
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (mut ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        // The first start records the identities (no job yet: nothing renamed).
        let first = [project("default", &a, "p1")];
        assert!(reconcile(&dir.0, &mut ledger, &first).unwrap().is_empty());
        ledger
            .write(&[job(1, "default"), job(2, "default")])
            .unwrap();

        // Same root and Frame.io project under a new name, beside a new project: renamed.
        let second = [project("show", &a, "p1"), project("other", &b, "p2")];
        let renamed = reconcile(&dir.0, &mut ledger, &second).unwrap();
        assert_eq!(renamed, vec![("default".into(), "show".into(), 2)]);
        assert!(ledger.jobs().values().all(|j| j.project == "show"));

        // Reopened from disk, the rename holds.
        drop(ledger);
        let (mut ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        assert!(ledger.jobs().values().all(|j| j.project == "show"));

        // Another Frame.io project on the same root is another project: no jobs follow.
        let third = [project("show2", &a, "p9")];
        assert!(reconcile(&dir.0, &mut ledger, &third).unwrap().is_empty());
        assert!(ledger.jobs().values().all(|j| j.project == "show"));
    }
}
