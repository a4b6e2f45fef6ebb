//! `upload.verify: "download"`: Frame.io's copy of every completed upload, downloaded back and
//! compared with the local file before the job is called `done`.
//!
//! Frame.io v4 exposes no checksum of a file (reference (f)): the only end-to-end proof is its
//! original (`include=media_links.original`, a presigned link fetched without our token). The
//! download is read in pieces alongside the same bytes of the local file, compared as it goes
//! (the first differing byte ends it: no need to fetch 40 GB to learn byte 10 differs) and
//! hashed (SHA-256, recorded on the job). Memory stays one buffer per verifier, whatever the
//! size. A download that breaks goes on from where it stopped (`Range`), the hash kept.
//!
//! - Equal: `done`, `verified: "download-sha256"` and the SHA-256 on the job.
//! - Different (size or bytes): that Frame.io file is deleted and the attempt fails; the queue
//!   uploads it again.
//! - Cannot be told (the user may not download: 403; the local file changed or went since it
//!   was sent; no link or no good download before `upload.processing_timeout_secs`): `done`
//!   with what the upload itself proved, and a WARN saying why.
//!
//! The job stays `processing` meanwhile (and so counts against `max_processing`); a stop or a
//! crash leaves it so in the ledger, and the next start's status watch finds it complete and
//! hands it here again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, TryRecvError};

use super::poller::{done, failed};
use super::{fail, is_version, Stopped, Uploader, Watched};
use crate::frameio::api::ApiError;
use crate::human;
use crate::ledger::Verified;
use crate::queue::{AttemptUpdate, FailureKind};

/// One read of the download (and of the local file) at a time.
const CHUNK: usize = 1 << 20;

/// A verifier thread: takes jobs Frame.io has complete until shutdown.
pub fn run_verifier(up: Arc<Uploader>, jobs: Receiver<Watched>) {
    let agent = download_agent(up.settings.part_stall);
    loop {
        select! {
            recv(jobs) -> w => match w {
                Ok(w) => verify(&up, &agent, w),
                Err(_) => return,
            },
            recv(up.stop) -> _ => return,
        }
    }
}

/// Presigned links need no token; a download is bounded by progress (a read that brings no
/// byte for `stall`), never by its size.
fn download_agent(stall: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_send_request(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(stall))
        .timeout_per_read(Some(stall))
        .build()
        .into()
}

/// What one look at Frame.io's copy found.
enum Check {
    Equal {
        sha256: String,
    },
    /// Frame.io holds other bytes than the local file: why, for the job.
    Differs(String),
    /// Nothing can be told, for good: why (the job is done without this proof).
    Unverifiable(String),
    /// The Frame.io file is gone.
    Gone,
    /// Not now (no link yet, the network): why, and the download so far.
    Again(String),
}

/// A download under way: the hash and the place reached, kept when it breaks.
struct Progress {
    hash: ring::digest::Context,
    local: File,
    offset: u64,
}

fn verify(up: &Uploader, agent: &ureq::Agent, mut w: Watched) {
    let started = Instant::now();
    let mut wait = up.settings.poll_min;
    let mut progress: Option<Progress> = None;
    log::debug!("{}: downloading Frame.io's copy back to compare it", w.name);
    loop {
        let check = match check(up, agent, &w, &mut progress) {
            Ok(c) => c,
            Err(Stopped) => return,
        };
        match check {
            Check::Equal { sha256 } => {
                log::debug!("{}: Frame.io's copy is equal (SHA-256 {sha256})", w.name);
                w.verified = Some(Verified::DownloadSha256);
                w.sha256 = Some(sha256);
                return done(up, w);
            }
            Check::Differs(why) => {
                let error = format!("{why}: deleted that Frame.io file to upload it again");
                if !up.delete(
                    &w.project,
                    &w.file_id,
                    "its bytes differ from the local file",
                ) {
                    up.report(AttemptUpdate::UnknownFile {
                        id: w.id,
                        possible: true,
                    });
                }
                return failed(up, &w, fail(FailureKind::Retry, error));
            }
            Check::Gone => {
                return failed(
                    up,
                    &w,
                    fail(FailureKind::Retry, "the file disappeared from Frame.io"),
                )
            }
            Check::Unverifiable(why) => {
                log::warn!("{}: not downloaded back to compare: {why}", w.name);
                return done(up, w);
            }
            Check::Again(why) if started.elapsed() >= up.settings.processing_timeout => {
                log::warn!(
                    "{}: not downloaded back to compare within {}: {why}",
                    w.name,
                    human::duration(up.settings.processing_timeout)
                );
                return done(up, w);
            }
            Check::Again(why) => {
                log::debug!("{}: download check again in {wait:?}: {why}", w.name);
                if up.sleep(wait).is_err() {
                    return;
                }
                wait = (wait * 3 / 2).min(up.settings.poll_max);
            }
        }
    }
}

fn check(
    up: &Uploader,
    agent: &ureq::Agent,
    w: &Watched,
    progress: &mut Option<Progress>,
) -> Result<Check, Stopped> {
    let Some(project) = up.project(&w.project) else {
        return Ok(Check::Unverifiable(format!(
            "its project {:?} is no longer in the config",
            w.project
        )));
    };
    let path = project.root.join(&w.rel);
    if let Some(why) = changed(&path, w) {
        return Ok(Check::Unverifiable(why));
    }
    let url = match up.api.original_url(up.account(&w.project), &w.file_id) {
        Ok(Some(url)) => url,
        Ok(None) => return Ok(Check::Again("Frame.io offers no download link yet".into())),
        Err(ApiError::Stopped) => return Err(Stopped),
        Err(e) if e.status() == Some(404) => return Ok(Check::Gone),
        Err(e) if e.status() == Some(403) => {
            return Ok(Check::Unverifiable(format!(
                "Frame.io does not let this user download it ({e})"
            )))
        }
        Err(e) => return Ok(Check::Again(e.to_string())),
    };
    let p = match progress.take() {
        Some(p) => p,
        None => match File::open(&path) {
            Ok(local) => Progress {
                hash: ring::digest::Context::new(&ring::digest::SHA256),
                local,
                offset: 0,
            },
            Err(e) => {
                return Ok(Check::Unverifiable(format!(
                    "cannot read the local file: {e}"
                )))
            }
        },
    };
    let (check, kept) = download(up, agent, &url, w, p)?;
    *progress = kept;
    // The local bytes compared must be the ones sent: a change while reading spoils it.
    if let (Check::Equal { .. }, Some(why)) = (&check, changed(&path, w)) {
        return Ok(Check::Unverifiable(why));
    }
    Ok(check)
}

/// Why the local file is no longer the one sent, if it is not.
fn changed(path: &std::path::Path, w: &Watched) -> Option<String> {
    match is_version(path, w.size, w.mtime_ns) {
        Ok(true) => None,
        Ok(false) => Some("the local file changed since it was sent".into()),
        Err(e) => Some(format!("cannot read the local file: {e}")),
    }
}

/// Fetches `url` from `p.offset` on and compares it with the local file. The progress comes
/// back with `Again` (the download broke: it goes on from there next time).
fn download(
    up: &Uploader,
    agent: &ureq::Agent,
    url: &str,
    w: &Watched,
    mut p: Progress,
) -> Result<(Check, Option<Progress>), Stopped> {
    let mut request = agent.get(url);
    if p.offset > 0 {
        request = request.header("Range", format!("bytes={}-", p.offset));
    }
    let mut response = match request.call() {
        Ok(r) => r,
        Err(e) => return Ok((Check::Again(format!("download: {e}")), Some(p))),
    };
    let status = response.status().as_u16();
    match status {
        200 if p.offset > 0 => {
            // The server ignored the range: start over.
            p = Progress {
                hash: ring::digest::Context::new(&ring::digest::SHA256),
                offset: 0,
                local: p.local,
            };
        }
        200 => {}
        206 if content_range_start(&response) == Some(p.offset) => {}
        // An expired link (403), a server error: a new link next time, same place.
        _ => {
            return Ok((
                Check::Again(format!("the download answered {status}")),
                Some(p),
            ))
        }
    }
    let remaining = w.size - p.offset.min(w.size);
    if let Some(len) = content_length(&response) {
        if len != remaining {
            let theirs = p.offset + len;
            return Ok((
                Check::Differs(format!(
                    "Frame.io's copy is {} bytes, the local file {} bytes",
                    theirs, w.size
                )),
                None,
            ));
        }
    }
    if let Err(e) = p.local.seek(SeekFrom::Start(p.offset)) {
        return Ok((
            Check::Unverifiable(format!("cannot read the local file: {e}")),
            None,
        ));
    }
    let mut body = response.body_mut().as_reader();
    let mut theirs = vec![0u8; CHUNK];
    let mut ours = vec![0u8; CHUNK];
    loop {
        if !matches!(up.stop.try_recv(), Err(TryRecvError::Empty)) {
            return Err(Stopped);
        }
        let n = match body.read(&mut theirs) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Ok((
                    Check::Again(format!("the download broke at byte {}: {e}", p.offset)),
                    Some(p),
                ))
            }
        };
        if p.offset + n as u64 > w.size {
            return Ok((
                Check::Differs(format!(
                    "Frame.io's copy is longer than the local file ({} bytes)",
                    w.size
                )),
                None,
            ));
        }
        if let Err(e) = p.local.read_exact(&mut ours[..n]) {
            return Ok((
                Check::Unverifiable(format!("cannot read the local file: {e}")),
                None,
            ));
        }
        if let Some(i) = theirs[..n].iter().zip(&ours[..n]).position(|(a, b)| a != b) {
            return Ok((
                Check::Differs(format!(
                    "Frame.io's copy differs from the local file at byte {}",
                    p.offset + i as u64
                )),
                None,
            ));
        }
        p.hash.update(&theirs[..n]);
        p.offset += n as u64;
    }
    if p.offset < w.size {
        return Ok((
            Check::Differs(format!(
                "Frame.io's copy ends at byte {}, the local file is {} bytes",
                p.offset, w.size
            )),
            None,
        ));
    }
    let sha256 = data_encoding::HEXLOWER.encode(p.hash.finish().as_ref());
    Ok((Check::Equal { sha256 }, None))
}

fn content_length(r: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    r.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The first byte of a `Content-Range: bytes a-b/n` answer.
fn content_range_start(r: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = r.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
