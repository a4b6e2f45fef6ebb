//! Per-endpoint leaky buckets, per user and account (Frame.io: "per account_user"), with Frame.io's `x-ratelimit-*` headers.

use super::state::{Bucket, State};
use std::time::Instant;

/// (requests, window in ms) per endpoint, from the API reference pages and the SDK's
/// docstrings (show file is 10/s and list subfolders 5/s there: features reference,
/// "Corrections"). Endpoints whose page states no limit (show folder) get the common 100/min.
pub(crate) fn limit_for(endpoint: &str) -> (u32, u64) {
    match endpoint {
        "create_folder" => (3, 1000),
        "create_version_stack" | "reorder_versions" | "create_webhook" | "update_webhook" => {
            (10, 60_000)
        }
        "show_file" => (10, 1000),
        "remote_upload"
        | "local_upload"
        | "file_status"
        | "list_files"
        | "list_folders"
        | "list_version_stacks" => (5, 1000),
        "delete_folder" | "delete_webhook" => (60, 60_000),
        _ => (100, 60_000),
    }
}

/// The outcome of one request against its bucket.
pub(crate) struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub window_ms: u64,
    /// Seconds until one request would fit again (only meaningful when refused).
    pub retry_after_secs: u64,
}

impl Verdict {
    pub(crate) fn headers(&self) -> [(String, String); 3] {
        [
            ("x-ratelimit-limit".into(), self.limit.to_string()),
            ("x-ratelimit-remaining".into(), self.remaining.to_string()),
            ("x-ratelimit-window".into(), self.window_ms.to_string()),
        ]
    }
}

/// A full bucket of `limit` drains at `limit / window`; each request adds one. `enforce` false
/// only reports (the request always passes and still fills the bucket). `account` is the one
/// in the URL (`""` for `me` and the account list): two projects of one account share its
/// buckets, two accounts have their own.
pub(crate) fn take(
    st: &mut State,
    user: &str,
    account: &str,
    endpoint: &'static str,
    enforce: bool,
) -> Verdict {
    let (limit, window_ms) = limit_for(endpoint);
    let now = Instant::now();
    let b = st
        .buckets
        .entry((user.to_string(), account.to_string(), endpoint))
        .or_insert(Bucket {
            level: 0.0,
            last: now,
        });
    let rate_per_ms = f64::from(limit) / window_ms as f64;
    let elapsed = now.duration_since(b.last).as_secs_f64() * 1000.0;
    b.level = (b.level - elapsed * rate_per_ms).max(0.0);
    b.last = now;
    let cap = f64::from(limit);
    let allowed = !enforce || b.level + 1.0 <= cap + 1e-9;
    if allowed {
        b.level = (b.level + 1.0).min(cap);
    }
    let remaining = (cap - b.level).floor().max(0.0) as u32;
    let wait_ms = ((b.level + 1.0 - cap).max(0.0) / rate_per_ms).ceil();
    Verdict {
        allowed,
        limit,
        remaining,
        window_ms,
        retry_after_secs: ((wait_ms / 1000.0).ceil() as u64).max(1),
    }
}

/// Headers for a request that never reached a bucket (401s, unknown users).
pub(crate) fn untouched(endpoint: &str) -> Verdict {
    let (limit, window_ms) = limit_for(endpoint);
    Verdict {
        allowed: true,
        limit,
        remaining: limit,
        window_ms,
        retry_after_secs: 1,
    }
}
