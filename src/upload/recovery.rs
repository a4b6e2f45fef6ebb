//! The recovery search: what an earlier attempt may have left in the destination folder when
//! the ledger cannot say (a create whose answer was lost to a crash, a timeout or a 5xx; a
//! delete that failed). A complete copy of the file is adopted, an incomplete one deleted.
//!
//! It lists the folder, and a folder listing is the scarcest thing Frame.io has: 100 calls a
//! minute, one page per 100 files. So it runs only when the job's ledger record says it can
//! find something (`Job::unknown_file`, written before every create call), never as a matter
//! of course; and jobs recovering in the same folder at the same time (after a crash, or a
//! burst of 5xx answers to creates) share one listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::frameio::api::{Api, ApiError, File};

/// A listing is dropped this long after it was taken once no search holds it (a new search
/// needs a newer one anyway).
const KEEP: Duration = Duration::from_secs(600);

/// The last listing of each folder searched, shared by the searches that can use it.
#[derive(Default)]
pub struct Listings {
    slots: Mutex<HashMap<String, Arc<Mutex<Option<Listing>>>>>,
}

struct Listing {
    /// When the listing was asked for (unix ms): it shows every file created before that.
    started_ms: u64,
    taken: Instant,
    files: Arc<Vec<File>>,
}

impl Listings {
    /// The files of `folder_id` for the recovery search of a job whose earlier attempts all
    /// ended before `since_ms` (unix ms). A listing that was started after that shows
    /// whatever they created, so it is shared; else a new one is taken, one at a time per
    /// folder: searches arriving meanwhile wait for it and use it.
    pub fn files(
        &self,
        api: &Api,
        account_id: &str,
        folder_id: &str,
        since_ms: u64,
    ) -> Result<Arc<Vec<File>>, ApiError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |l| {
                        l.as_ref().is_some_and(|l| l.taken.elapsed() < KEEP)
                    })
            });
            Arc::clone(slots.entry(folder_id.to_string()).or_default())
        };
        let mut listing = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = listing.as_ref().filter(|l| l.started_ms > since_ms) {
            return Ok(Arc::clone(&l.files));
        }
        let started_ms = now_ms();
        // Stacked files included: a reviewer may have stacked our copy meanwhile.
        let files = Arc::new(api.folder_files(account_id, folder_id)?);
        *listing = Some(Listing {
            started_ms,
            taken: Instant::now(),
            files: Arc::clone(&files),
        });
        Ok(files)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
