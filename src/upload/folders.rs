//! Frame.io folder ids for destination paths, created when missing, each exactly once.
//!
//! A path such as `Dailies/SQ01/UNDLM_00412` is resolved part by part under the project's root
//! folder: list the parent's children (all pages), take the folder with that name, or create
//! it. Frame.io allows two folders with the same name, so two jobs needing the same new folder
//! must not both create it: each path has its own lock (single flight), and the winner's id is
//! cached for everyone. Looking before creating also makes this hold across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::frameio::api::{Api, ApiError, Child, Folder};
use crate::timefmt::parse_rfc3339_ms;

/// The cache: path ("" = root) -> once-resolved id.
pub struct FolderCache {
    account_id: String,
    project_id: String,
    slots: Mutex<HashMap<String, Arc<Mutex<Option<String>>>>>,
}

impl FolderCache {
    pub fn new(account_id: &str, project_id: &str) -> FolderCache {
        FolderCache {
            account_id: account_id.to_string(),
            project_id: project_id.to_string(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, path: &str) -> Arc<Mutex<Option<String>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(path.to_string()).or_default())
    }

    /// Forgets a path and everything under it (a folder was deleted in Frame.io under us).
    pub fn forget(&self, path: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|p, _| !(p == path || p.starts_with(&format!("{path}/")) || path.is_empty()));
    }

    /// The folder id for `path` (`/`-separated, already validated; "" is the project root).
    pub fn resolve(&self, api: &Api, path: &str) -> Result<String, ApiError> {
        let slot = self.slot(path);
        // Held while resolving: a second job for the same path waits here and then reads the
        // id the first one found or created.
        let mut id = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = id.as_ref() {
            return Ok(id.clone());
        }
        let resolved = match path.rsplit_once('/') {
            _ if path.is_empty() => {
                api.project(&self.account_id, &self.project_id)?
                    .root_folder_id
            }
            Some((parent, name)) => {
                let parent_id = self.resolve(api, parent)?;
                self.find_or_create(api, &parent_id, name)?
            }
            None => {
                let root = self.resolve(api, "")?;
                self.find_or_create(api, &root, path)?
            }
        };
        *id = Some(resolved.clone());
        Ok(resolved)
    }

    /// The id of the folder at `path` ("" is the project root) if it exists, creating
    /// nothing (for `postflow check`).
    pub fn existing(&self, api: &Api, path: &str) -> Result<Option<String>, ApiError> {
        let mut id = api
            .project(&self.account_id, &self.project_id)?
            .root_folder_id;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            match self.find(api, &id, name)? {
                Some(child) => id = child,
                None => return Ok(None),
            }
        }
        Ok(Some(id))
    }

    fn find_or_create(&self, api: &Api, parent_id: &str, name: &str) -> Result<String, ApiError> {
        if let Some(id) = self.find(api, parent_id, name)? {
            return Ok(id);
        }
        match api.create_folder(&self.account_id, parent_id, name) {
            Ok(folder) => {
                log::debug!("created Frame.io folder {name:?}");
                Ok(folder.id)
            }
            // The create may have happened although the answer was lost: look again before
            // anyone tries a second create.
            Err(e) if e.maybe_committed() => match self.find(api, parent_id, name)? {
                Some(id) => Ok(id),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The folder named `name` in `parent_id`; of several (Frame.io allows duplicates, made
    /// by hand or by another tool), the oldest by `created_at`, so every run picks the same
    /// one. Never the first listed: the default order is undocumented and Frame.io has
    /// changed list sorting twice.
    fn find(&self, api: &Api, parent_id: &str, name: &str) -> Result<Option<String>, ApiError> {
        let folders: Vec<Folder> = api
            .folder_children(&self.account_id, parent_id)?
            .into_iter()
            .filter_map(|c| match c {
                Child::Folder(f) if f.name == name => Some(f),
                _ => None,
            })
            .collect();
        if folders.len() > 1 {
            log::warn!(
                "Frame.io has {} folders named {name:?} in one place; using the oldest",
                folders.len()
            );
        }
        Ok(oldest(folders).map(|f| f.id))
    }
}

/// The oldest folder by `created_at`; one without a readable date comes after every dated
/// one, and ties go to the smaller id, so the choice never depends on the listing's order.
fn oldest(folders: Vec<Folder>) -> Option<Folder> {
    folders.into_iter().min_by(|a, b| {
        let age = |f: &Folder| {
            f.created_at
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .unwrap_or(u64::MAX)
        };
        age(a).cmp(&age(b)).then_with(|| a.id.cmp(&b.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(id: &str, created_at: Option<&str>) -> Folder {
        Folder {
            id: id.into(),
            name: "Dailies".into(),
            parent_id: None,
            created_at: created_at.map(str::to_string),
        }
    }

    #[test]
    fn of_duplicate_folders_the_oldest_wins_whatever_the_order() {
        let listed = [
            folder("b", Some("2025-06-26T20:14:33.796116Z")),
            folder("a", None),
            folder("c", Some("2024-01-02T03:04:05.000000Z")),
            folder("d", Some("2025-01-01T00:00:00Z")),
        ];
        for shift in 0..listed.len() {
            let mut order = listed.to_vec();
            order.rotate_left(shift);
            assert_eq!(oldest(order).map(|f| f.id).as_deref(), Some("c"));
            let mut reversed = listed.to_vec();
            reversed.rotate_left(shift);
            reversed.reverse();
            assert_eq!(oldest(reversed).map(|f| f.id).as_deref(), Some("c"));
        }
        assert_eq!(
            oldest(vec![folder("y", None), folder("x", None)])
                .map(|f| f.id)
                .as_deref(),
            Some("x"),
            "no dates: the same pick every time"
        );
        assert!(oldest(Vec::new()).is_none());
    }
}
