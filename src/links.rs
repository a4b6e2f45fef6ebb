//! Links: which files the public server may hand out, under which unguessable token, until
//! when, and how much of each has been served.
//!
//! A link binds a fresh token (128 bits from the OS) to one file as it was when the link was
//! made (path, size, mtime). Lookups compare the token against every live link in constant
//! time, so response timing says nothing about how close a guess was.
#![forbid(unsafe_code)]

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Progress keeps at most this many disjoint served intervals per link. Past it the two
/// closest are merged (coverage may then over-count slightly); only a client asking for
/// thousands of scattered ranges gets there, and memory stays bounded.
const MAX_INTERVALS: usize = 1024;

/// Hex digits in a token (16 random bytes).
pub(crate) const TOKEN_LEN: usize = 32;

/// The registry of links. Cheap to clone; all clones see the same links.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Registry>,
}

struct Registry {
    ttl: Duration,
    links: Mutex<Vec<Arc<LinkState>>>,
}

/// A registered link, as the uploader gives it to Frame.io (prefixed with the public URL).
/// Its `Debug` form shows only the token's first characters, so it is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct Link {
    /// The secret part of the URL. Do not log it.
    pub token: String,
    /// `/f/<token>/<percent-encoded file name>`.
    pub url_path: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = self.token.get(..6).unwrap_or("");
        f.debug_struct("Link")
            .field("token", &format_args!("{prefix}…"))
            .finish_non_exhaustive()
    }
}

/// What has been served of one link, for the uploader's stall detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkActivity {
    /// Distinct bytes of the file served so far (the union of all ranges sent).
    pub covered: u64,
    /// The file's size at registration.
    pub total: u64,
    /// When a byte of this link was last sent; `None` before the first.
    pub last_served_at: Option<Instant>,
}

/// One link's fixed facts plus its mutable progress.
pub(crate) struct LinkState {
    token: [u8; TOKEN_LEN],
    pub job: u64,
    pub path: PathBuf,
    /// The file name's bytes, which the URL's last segment must decode to.
    pub name: Vec<u8>,
    pub size: u64,
    pub mtime: SystemTime,
    expires_at: Instant,
    revoked: AtomicBool,
    pub progress: Mutex<Progress>,
}

impl LinkState {
    /// Display form of the file name for logs.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Whether the link was revoked; a transfer in flight stops at its next chunk.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Whether `meta` (of the file as opened now) still describes the registered version.
    pub fn unchanged(&self, meta: &Metadata) -> bool {
        meta.is_file() && meta.len() == self.size && meta.modified().ok() == Some(self.mtime)
    }

    pub fn progress(&self) -> MutexGuard<'_, Progress> {
        // A poisoned lock only means another transfer panicked mid-update; the intervals
        // are still a valid (if slightly stale) set, so keep serving.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Served byte intervals of one link (sorted, disjoint, half-open) and rate bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    intervals: Vec<(u64, u64)>,
    covered: u64,
    /// Index into `MILESTONES` of the next milestone not yet reached.
    next_milestone: usize,
    pub last_served_at: Option<Instant>,
    /// Bytes sent (repeats included) since `window_start`, for bytes/s.
    pub window_bytes: u64,
    pub window_start: Option<Instant>,
}

pub(crate) const MILESTONES: [u8; 4] = [25, 50, 75, 100];

impl Progress {
    /// Records that bytes `start..end` were sent. Returns the covered byte count.
    pub fn add(&mut self, start: u64, end: u64, now: Instant) -> u64 {
        self.last_served_at = Some(now);
        self.window_start.get_or_insert(now);
        self.window_bytes += end - start;
        if start < end {
            self.insert(start, end);
        }
        self.covered
    }

    fn insert(&mut self, start: u64, end: u64) {
        // First interval that ends at or after `start`: everything before it is untouched.
        let i = self.intervals.partition_point(|&(_, e)| e < start);
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < self.intervals.len() && self.intervals[j].0 <= e {
            s = s.min(self.intervals[j].0);
            e = e.max(self.intervals[j].1);
            j += 1;
        }
        self.intervals.splice(i..j, [(s, e)]);
        if self.intervals.len() > MAX_INTERVALS {
            let k = (1..self.intervals.len())
                .min_by_key(|&k| self.intervals[k].0 - self.intervals[k - 1].1)
                .unwrap_or(1);
            self.intervals[k - 1].1 = self.intervals[k].1;
            self.intervals.remove(k);
        }
        self.covered = self.intervals.iter().map(|(s, e)| e - s).sum();
    }

    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// The highest milestone newly reached at this coverage, if any. Each is reported once;
    /// milestones jumped over together are reported as the highest only (a small file
    /// logs "100% served", not four lines).
    pub fn milestone(&mut self, total: u64) -> Option<u8> {
        let percent = if total == 0 {
            100
        } else {
            (u128::from(self.covered) * 100 / u128::from(total)) as u8
        };
        let reached = MILESTONES[self.next_milestone..]
            .iter()
            .take_while(|&&m| m <= percent)
            .count();
        self.next_milestone += reached;
        (reached > 0).then(|| MILESTONES[self.next_milestone - 1])
    }
}

impl Links {
    pub(crate) fn new(ttl: Duration) -> Links {
        Links {
            inner: Arc::new(Registry {
                ttl,
                links: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Makes a link to the file at `path` as it is now (size and mtime are recorded; a
    /// later change makes the link answer 410). `job` is echoed in events.
    pub fn register(&self, job: u64, path: &Path) -> io::Result<Link> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} has no file name", path.display()),
                )
            })?
            .as_encoded_bytes()
            .to_vec();
        let token = new_token()?;
        let token_str = String::from_utf8_lossy(&token).into_owned();
        let url_path = format!("/f/{token_str}/{}", crate::http1::percent_encode(&name));
        let state = LinkState {
            token,
            job,
            path: path.to_path_buf(),
            name,
            size: meta.len(),
            mtime: meta.modified()?,
            expires_at: Instant::now() + self.inner.ttl,
            revoked: AtomicBool::new(false),
            progress: Mutex::new(Progress::default()),
        };
        let mut links = self.lock();
        let now = Instant::now();
        links.retain(|l| l.expires_at > now);
        links.push(Arc::new(state));
        Ok(Link {
            token: token_str,
            url_path,
        })
    }

    /// Ends a link now: new requests get 404 and transfers in flight stop.
    pub fn revoke(&self, token: &str) {
        let mut links = self.lock();
        if let Some(i) = find(&links, token.as_bytes()) {
            links[i].revoked.store(true, Ordering::Relaxed);
            links.remove(i);
        }
    }

    /// Progress of a live link; `None` once it is unknown, revoked or expired.
    pub fn activity(&self, token: &str) -> Option<LinkActivity> {
        let link = self.lookup(token)?;
        let progress = link.progress();
        Some(LinkActivity {
            covered: progress.covered(),
            total: link.size,
            last_served_at: progress.last_served_at,
        })
    }

    /// The live link with this token, if any.
    pub(crate) fn lookup(&self, token: &str) -> Option<Arc<LinkState>> {
        let mut links = self.lock();
        let i = find(&links, token.as_bytes())?;
        if links[i].expires_at <= Instant::now() {
            links.remove(i);
            return None;
        }
        Some(Arc::clone(&links[i]))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<LinkState>>> {
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Index of the link whose token equals `token`, comparing against every link without
/// an early exit so timing does not depend on where a guess differs.
fn find(links: &[Arc<LinkState>], token: &[u8]) -> Option<usize> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    let mut found = None;
    for (i, link) in links.iter().enumerate() {
        let diff = link
            .token
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(i);
        }
    }
    found
}

/// 16 bytes from the OS's random source (`getrandom`), as lowercase hex. A token is the only
/// thing that guards a file, so there is no weaker fallback: no bytes, no link.
fn new_token() -> io::Result<[u8; TOKEN_LEN]> {
    let mut random = [0u8; TOKEN_LEN / 2];
    getrandom::fill(&mut random).map_err(|e| {
        io::Error::other(format!(
            "no link token: the operating system gave no random bytes: {e}"
        ))
    })?;
    let mut token = [0u8; TOKEN_LEN];
    for (i, b) in random.iter().enumerate() {
        token[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        token[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(ranges: &[(u64, u64)]) -> (u64, Vec<(u64, u64)>) {
        let mut p = Progress::default();
        let now = Instant::now();
        for &(s, e) in ranges {
            p.add(s, e, now);
        }
        (p.covered(), p.intervals)
    }

    #[test]
    fn overlapping_and_repeated_ranges_count_once() {
        assert_eq!(covered(&[(0, 10), (0, 10)]), (10, vec![(0, 10)]));
        assert_eq!(covered(&[(0, 10), (5, 15)]), (15, vec![(0, 15)]));
        assert_eq!(covered(&[(10, 20), (0, 5)]), (15, vec![(0, 5), (10, 20)]));
        assert_eq!(covered(&[(0, 5), (10, 20), (5, 10)]), (20, vec![(0, 20)]));
        assert_eq!(
            covered(&[(0, 5), (10, 15), (20, 25), (3, 22)]),
            (25, vec![(0, 25)])
        );
        assert_eq!(covered(&[(5, 6), (0, 100)]), (100, vec![(0, 100)]));
        assert_eq!(covered(&[(0, 0)]), (0, vec![]));
    }

    #[test]
    fn interval_count_is_bounded() {
        let mut p = Progress::default();
        let now = Instant::now();
        for i in 0..(MAX_INTERVALS as u64 + 10) {
            p.add(i * 10, i * 10 + 1, now);
        }
        assert_eq!(p.intervals.len(), MAX_INTERVALS);
    }

    #[test]
    fn milestones_fire_once_each_highest_first_crossed() {
        let mut p = Progress::default();
        let now = Instant::now();
        p.add(0, 10, now);
        assert_eq!(p.milestone(100), None);
        p.add(0, 26, now);
        assert_eq!(p.milestone(100), Some(25));
        assert_eq!(p.milestone(100), None);
        p.add(26, 80, now);
        assert_eq!(p.milestone(100), Some(75));
        p.add(80, 100, now);
        assert_eq!(p.milestone(100), Some(100));
        assert_eq!(p.milestone(100), None);
        assert_eq!(Progress::default().milestone(0), Some(100));
    }

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let link = Link {
            token: "0123456789abcdef0123456789abcdef".into(),
            url_path: "/f/0123456789abcdef0123456789abcdef/a.mov".into(),
        };
        assert_eq!(format!("{link:?}"), "Link { token: 012345…, .. }");
    }

    #[test]
    fn lookup_needs_the_exact_token() {
        let dir = std::env::temp_dir().join(format!("postflow-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.mov");
        std::fs::write(&path, b"x").unwrap();
        let links = Links::new(Duration::from_secs(60));
        let link = links.register(7, &path).unwrap();
        assert_eq!(links.lookup(&link.token).unwrap().job, 7);
        let mut wrong = link.token.clone().into_bytes();
        wrong[31] = if wrong[31] == b'0' { b'1' } else { b'0' };
        assert!(links.lookup(std::str::from_utf8(&wrong).unwrap()).is_none());
        assert!(links.lookup(&link.token[..31]).is_none());
        links.revoke(&link.token);
        assert!(links.lookup(&link.token).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
