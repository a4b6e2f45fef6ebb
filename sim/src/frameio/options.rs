//! What a simulator is started with ([`Options`]) and what tests may change while it runs
//! ([`Faults`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Fixed at start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; `127.0.0.1:0` picks a free port.
    pub listen: String,
    /// The registered OAuth Web App credential.
    pub client_id: String,
    pub client_secret: String,
    /// The credential's one registered redirect URI (IMS demands https, even for localhost).
    pub redirect_uri: String,
    /// Directory of files named `<hostname>` holding `127.0.0.1:PORT`: how the remote fetcher
    /// reaches `https://<hostname>/…` (written by the cloudflared stand-in). `None`: https
    /// source URLs fail.
    pub tunnel_registry: Option<PathBuf>,
    /// Accounts listed by `GET /v4/accounts` besides the one holding the project.
    pub extra_accounts: usize,
    /// Projects besides the main one ("Sim Project"), each with its own root folder.
    pub projects: Vec<SimProject>,
    /// Where upload bytes are staged; default: a fresh directory under the system temp dir,
    /// removed when the simulator is dropped.
    pub data_dir: Option<PathBuf>,
    /// Keep every file's original bytes here, as `<dir>/<file_id>`, written as they arrive
    /// (the fetcher's bytes at their offsets, each part S3 accepted at its offset: a part
    /// corrupted on the way in and accepted is kept corrupted), so that
    /// `include=media_links.original` can hand out a download URL. A kept original is removed
    /// with its file (deleted alone or with its folder), not when the simulator is dropped.
    /// `None` (the default): nothing is kept, and `media_links.original` is always null.
    pub originals_dir: Option<PathBuf>,
    /// PRNG seed; `None` seeds from time and pid.
    pub seed: Option<u64>,
    /// Initial fault and behaviour knobs.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: "127.0.0.1:0".into(),
            client_id: "postflow-sim-client".into(),
            client_secret: "p8e-sim-secret-0123456789abcdef".into(),
            redirect_uri: "https://localhost/postflow/callback".into(),
            tunnel_registry: None,
            extra_accounts: 0,
            projects: Vec::new(),
            data_dir: None,
            originals_dir: None,
            seed: None,
            faults: Faults::default(),
        }
    }
}

/// One more project to serve, as [`Options::projects`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimProject {
    pub name: String,
    /// 0: the main account (the project is in the main workspace); `i >= 1`: the i-th extra
    /// account (needs `extra_accounts >= i`), in that account's one workspace.
    pub account: usize,
}

/// Which hint a 429 carries. Frame.io documents only `x-ratelimit-*`; `Retry-After` is not
/// documented, so clients must cope with each of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryHint {
    /// `Retry-After: <seconds>` plus the `x-ratelimit-*` headers.
    RetryAfter,
    /// Only the `x-ratelimit-*` headers (window in milliseconds).
    WindowOnly,
    /// No hint at all: not even `x-ratelimit-*` on the 429 itself.
    None,
}

/// How the remote fetcher pulls `source_url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchMode {
    /// One `GET`, expecting 200 with an exact `Content-Length`.
    Plain,
    /// `Range: bytes=0-0` to learn the size, then parallel `Range` GETs expecting 206.
    Ranges,
    /// Plain for the 1st, 3rd, … fetch; ranges for the 2nd, 4th, …
    Alternate,
}

/// Knobs tests may change at runtime with [`crate::FrameIo::set_faults`] (or `POST /_sim/faults`
/// with a JSON object holding any subset of these fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..1) of authorised `/v4` calls answered 500/502/503.
    pub error_5xx_fraction: f64,
    /// When true, an injected 5xx on a POST/PATCH/DELETE is sent *after* the call took effect (a
    /// gateway error on a request that went through), the hard case for exactly-once.
    pub error_5xx_after_commit: bool,
    /// The next N authorised `/v4` requests that pass the rate limit get a 500/502/503
    /// (decrements), whatever `error_5xx_fraction` says. With `error_5xx_only` set, only
    /// requests to those endpoints count. Deterministic, unlike the fraction.
    pub error_5xx_next: u32,
    /// Endpoint names (as in the counters: `remote_upload`, `create_folder`, `file_status`,
    /// …) that `error_5xx_next` applies to; empty means every endpoint.
    pub error_5xx_only: Vec<String>,
    /// The next N authorised `/v4` requests get 429 (decrements).
    pub burst_429: u32,
    /// Hint carried by 429 answers.
    pub retry_hint: RetryHint,
    /// Enforce the per-endpoint leaky buckets (headers are sent either way).
    pub rate_limits: bool,
    /// `expires_in` of new access tokens (IMS default 86399 s).
    pub access_token_lifetime_secs: u64,
    /// Lifetime of new refresh tokens (IMS default 14 days).
    pub refresh_token_lifetime_secs: u64,
    /// When true, a refresh token still works after it was used once.
    pub rotation_reuse_allowed: bool,
    /// Sleep before answering any IMS, `/v4` or S3 request.
    pub response_delay_ms: u64,
    /// The next N remote fetches never start: the file stays incomplete forever.
    pub drop_fetches: u32,
    /// The next N remote fetches fail (`upload_failed`) without contacting the source.
    pub fail_fetches: u32,
    /// Wait before a remote fetch starts.
    pub fetch_delay_ms: u64,
    pub fetch_mode: FetchMode,
    /// Parallel `Range` GETs in ranges mode.
    pub fetch_parallelism: usize,
    /// Before answering 202, `HEAD` the source (through the registry) to learn `file_size` and
    /// enforce `remote_size_limit` with a 422. When false, the size is learnt by the fetch
    /// and an over-limit source ends `upload_failed`.
    pub remote_probe: bool,
    /// File objects carry `"media_type": null` (S3 parts then expect
    /// `application/octet-stream`).
    pub media_type_null: bool,
    /// Largest source a remote upload accepts (Frame.io: 50 GB).
    pub remote_size_limit: u64,
    /// Target part size for local uploads (the real rule is undocumented).
    pub part_size: u64,
    /// Files smaller than this get a single upload URL (Frame.io: "< 10 MB").
    pub single_part_below: u64,
    /// `X-Amz-Expires` of new part URLs.
    pub part_url_lifetime_secs: u64,
    /// Time between `uploaded` and `transcoded`.
    pub transcode_delay_ms: u64,
    /// Bytes per second at which each part PUT's body is read (0: as fast as it comes). A
    /// slow uplink, made deterministically: the client's socket buffers fill and its writes
    /// wait, as on a shaped link.
    pub s3_bytes_per_sec: u64,
    /// The next N part PUTs stop reading their body after the first MiB (at most half the
    /// part) for `s3_stall_ms`, then read on: a connection that stalls mid-part.
    pub s3_stall_next: u32,
    pub s3_stall_ms: u64,
    /// Every Nth part PUT (0: none) has one byte of its body changed on the way in: S3 stores
    /// other bytes than were sent. A `Content-MD5` header then makes it 400 `BadDigest`;
    /// without one the wrong bytes are kept (and the ETag is their MD5).
    pub s3_corrupt_every: u32,
    /// Presigned URLs signed without `Content-MD5`: a PUT carrying the header is 403
    /// `SignatureDoesNotMatch`, as S3 answers a header the signature does not cover.
    pub s3_refuse_content_md5: bool,
    /// The next N files whose bytes all arrive (a remote pull that got every byte, a local
    /// upload whose parts are all in) never become complete, nor failed: Frame.io's pipeline
    /// losing them (reported of its fetcher: "left the file with empty media").
    pub never_complete_next: u32,
    /// The next N files whose bytes all arrive take `slow_complete_ms` more to become
    /// complete: Frame.io slow to process one big file (stitching, checking).
    pub slow_complete_next: u32,
    pub slow_complete_ms: u64,
    /// The `detail` of the 422 that refuses a remote upload over `remote_size_limit`; `None`
    /// gives one naming the limit. Frame.io's wording is undocumented.
    pub remote_limit_detail: Option<String>,
    /// File creates (`remote_upload`, `local_upload`) take effect at once and answer this
    /// much later: a client that dies meanwhile leaves a file it never heard of.
    pub create_answer_delay_ms: u64,
    /// The next N IMS token requests get 429 with `Retry-After: ims_retry_after_secs`.
    pub ims_429_next: u32,
    pub ims_retry_after_secs: u64,
    /// Version stack behaviour the reference leaves open, and holds for crash tests.
    pub stacks: StackKnobs,
    /// Seconds before the first webhook retry (Frame.io: 15); each later wait doubles, each
    /// with up to 25% jitter added. 5 attempts in all. Tests scale it down (e.g. 0.2).
    pub webhook_retry_secs: f64,
    /// Each webhook event is delivered this many extra times (Frame.io may repeat a delivery).
    pub webhook_duplicates: u32,
    /// Time from a file's upload completing (`file.upload.completed`) to `file.ready`.
    pub ready_delay_ms: u64,
    /// `include=media_links…` on show file answers 403 (Frame.io: the user may not download).
    pub download_forbidden: bool,
    /// The next N files that become complete with their original kept have one byte of it
    /// changed (the middle one), as if Frame.io stored bad bytes. The file's `sha256` stays
    /// that of the bytes received; `FileView::original_corrupted` says which file it was.
    pub corrupt_original_next: u32,
    /// For this long after a file completes, its `media_links.original` is null (Frame.io's
    /// links appear some time after the upload completes).
    pub original_missing_ms: u64,
    /// A download (GET of a `download_url`) stops sending after this many body bytes and
    /// holds the connection open, as a stalled CDN does, until this is set to `None` or
    /// above what was sent (then it sends the rest), or the simulator is dropped.
    pub download_stall_after: Option<u64>,
    /// `X-Amz-Expires` of new download URLs (past it: 403 `AccessDenied`).
    pub download_url_lifetime_secs: u64,
}

/// Version stack knobs (`"stacks": {…}` in `POST /_sim/faults`; fields left out are off).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackKnobs {
    /// A file moved into a stack lands at the bottom instead of on top (the reference says
    /// only "most likely top").
    pub moved_in_at_bottom: bool,
    /// The experimental reorder answers 404, as on an account without experimental endpoints.
    pub reorder_unavailable: bool,
    /// Creating a stack and moving a file take effect, then wait this long before answering
    /// (a test kills the client in between).
    pub hold_after_commit_ms: u64,
}

/// Uses up one of the next-N faults in `counter`: whether there was one left.
pub(crate) fn take_one(counter: &mut u32) -> bool {
    let hit = *counter > 0;
    *counter = counter.saturating_sub(1);
    hit
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            error_5xx_fraction: 0.0,
            error_5xx_after_commit: false,
            error_5xx_next: 0,
            error_5xx_only: Vec::new(),
            burst_429: 0,
            retry_hint: RetryHint::RetryAfter,
            rate_limits: true,
            access_token_lifetime_secs: 86_399,
            refresh_token_lifetime_secs: 14 * 24 * 3600,
            rotation_reuse_allowed: false,
            response_delay_ms: 0,
            drop_fetches: 0,
            fail_fetches: 0,
            fetch_delay_ms: 0,
            fetch_mode: FetchMode::Plain,
            fetch_parallelism: 4,
            remote_probe: true,
            media_type_null: false,
            remote_size_limit: 50_000_000_000,
            part_size: 25 * 1024 * 1024,
            single_part_below: 10 * 1024 * 1024,
            part_url_lifetime_secs: 86_400,
            transcode_delay_ms: 500,
            s3_bytes_per_sec: 0,
            s3_stall_next: 0,
            s3_stall_ms: 30_000,
            s3_corrupt_every: 0,
            s3_refuse_content_md5: false,
            never_complete_next: 0,
            slow_complete_next: 0,
            slow_complete_ms: 30_000,
            remote_limit_detail: None,
            create_answer_delay_ms: 0,
            ims_429_next: 0,
            ims_retry_after_secs: 2,
            stacks: StackKnobs::default(),
            webhook_retry_secs: 15.0,
            webhook_duplicates: 0,
            ready_delay_ms: 500,
            download_forbidden: false,
            corrupt_original_next: 0,
            original_missing_ms: 0,
            download_stall_after: None,
            download_url_lifetime_secs: 3600,
        }
    }
}
