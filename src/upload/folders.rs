//! Frame.io folder ids for destination paths, created when missing, each exactly once.
//!
//! A path such as `Dailies/SQ01/UNDLM_00412` is resolved part by part under the project's root
//! folder: list the parent's children (all pages), take the folder with that name, or create
//! it. Frame.io allows two folders with the same name, so two jobs needing the same new folder
//! must not both create it: each path has its own lock (single flight), and the winner's id is
//! cached for everyone. Looking before creating also makes this hold across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::frameio::api::{Api, ApiError, Child};

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

    /// The first folder named `name` in `parent_id` (Frame.io lists oldest first; taking the
    /// first keeps every run choosing the same one if duplicates were ever made by hand).
    fn find(&self, api: &Api, parent_id: &str, name: &str) -> Result<Option<String>, ApiError> {
        Ok(api
            .folder_children(&self.account_id, parent_id)?
            .into_iter()
            .find_map(|c| match c {
                Child::Folder(f) if f.name == name => Some(f.id),
                _ => None,
            }))
    }
}
