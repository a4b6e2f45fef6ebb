//! Local upload: PUT each part of a file to its presigned S3 URL.
//!
//! Every part is streamed from the file (never read whole into memory) with an exact
//! `Content-Length` (never chunked: S3 answers 411 to chunked bodies), the `Content-Type`
//! Frame.io returned as `media_type`, or `application/octet-stream` when it returned none (the
//! same for every part, it is part of the signature) and `x-amz-acl: private` (also signed). Presigned URLs carry their authorisation in the
//! query string: no `Authorization` header, and the URL itself is a secret (never logged).
//! Parts go up `parallel` at a time; a failed or stalled part is retried on its own. No part
//! is ever abandoned for being slow: only one the connection stops taking bytes of.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, TryRecvError};

use md5::Digest;
use serde::{Deserialize, Serialize};

/// One presigned part URL and the bytes it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub url: String,
    pub size: u64,
}

/// Offsets of each part: parts follow each other from byte 0.
pub fn offsets(parts: &[Part]) -> Vec<u64> {
    parts
        .iter()
        .scan(0u64, |at, p| {
            let start = *at;
            *at += p.size;
            Some(start)
        })
        .collect()
}

/// Why a part could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartError {
    /// The presigned URLs have expired: start the file over with new ones.
    Expired,
    /// S3 refused the request as made (signature, headers, length): retrying cannot help.
    Rejected(String),
    /// A network error or a 5xx that outlasted the retries.
    Transient(String),
    /// Reading the local file failed (vanished, truncated, unreadable).
    File(String),
    /// Shutdown was requested.
    Stopped,
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartError::Expired => write!(f, "the part upload URLs have expired"),
            PartError::Rejected(m) => write!(f, "S3 refused a part: {m}"),
            PartError::Transient(m) => write!(f, "part upload failed: {m}"),
            PartError::File(m) => write!(f, "reading the file: {m}"),
            PartError::Stopped => write!(f, "stopped"),
        }
    }
}

/// The HTTP agent for part PUTs, shared by every part of every job: S3's XML error bodies are
/// read (not turned into bare status errors). It sets no total budget for a body or for the
/// wait for S3's answer: each request is bounded by progress instead (see `put_part`).
pub fn s3_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        // The request head (and a TLS handshake) is a few kilobytes, whatever the part.
        .timeout_send_request(Some(Duration::from_secs(30)))
        // S3's answer body is empty or a short XML error.
        .timeout_recv_body(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// How long a part may go without the connection taking a byte before it is cut and retried
/// on its own. Frame.io's SDK allows at least 120 s per chunk, counted per read/write; a
/// minute keeps a dead connection from holding a part for long, while a slow one (50 KB/s
/// takes a 128 KiB buffer every 2.6 s) never comes near it.
pub const PART_STALL: Duration = Duration::from_secs(60);

/// The slowest uplink a part is sure to get through on, in bytes per second ("50 KB/s is
/// slow, not broken"). Only the wait for S3's answer depends on it (see `answer_wait`).
const SLOW_LINK: u64 = 50_000;

/// What a connection can still hold after our last write of a body returned: the socket's
/// send buffer (Linux grows it to 4 MiB by default), the queues on the way and S3's receive
/// buffer.
const MAX_IN_FLIGHT: u64 = 16 << 20;

/// How long to wait for S3's answer once the connection has taken the last byte of a part:
/// the bytes still in flight must reach S3 first, which on a slow link takes a while, and
/// nothing can be seen of their progress from here. A stall period plus what is in flight
/// at `SLOW_LINK`: about 6.6 minutes for a 16 MiB part, one minute for a tiny one.
pub fn answer_wait(part_size: u64, stall: Duration) -> Duration {
    stall + Duration::from_secs(part_size.min(MAX_IN_FLIGHT).div_ceil(SLOW_LINK))
}

/// Checks that Frame.io's parts cover the file exactly: their sizes add up to the file size
/// (so no byte is left out and none is sent twice) and none is empty, unless the file is.
/// Frame.io's part sizes are undocumented, so they are checked rather than assumed.
pub fn check_layout(parts: &[Part], file_size: u64) -> Result<(), String> {
    let sum = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.size))
        .ok_or("Frame.io's part sizes overflow")?;
    if sum != file_size {
        let kind = if sum < file_size {
            "a hole"
        } else {
            "an overlap"
        };
        return Err(format!(
            "Frame.io's {} part sizes add up to {sum} bytes, not the file's {file_size}: \
             uploading them would leave {kind}",
            parts.len()
        ));
    }
    if file_size > 0 {
        if let Some(i) = parts.iter().position(|p| p.size == 0) {
            return Err(format!(
                "Frame.io gave part {} of {} a size of 0 bytes",
                i + 1,
                parts.len()
            ));
        }
    }
    Ok(())
}

/// Sends one part. `offset`/`size` select the bytes of `path`; `sent` grows as the
/// connection takes them (and shrinks back if this try fails).
///
/// Bounded by progress, never by total time. A body write that the connection accepts no
/// byte of for `stall` fails (`timeout_per_write`: the socket's own send timeout, restarted
/// by every write, so it fires on a peer or a link that stopped taking bytes and never on
/// one that takes them slowly). A reader wrapped around the file could not do that: while
/// the socket is full, the HTTP client is blocked in a write and never asks the reader for
/// more. After the last byte, the wait for the answer is `answer_wait`.
///
/// Verified (DESIGN "Verification"): the part's MD5 is read first and sent as `Content-MD5`
/// (S3 refuses a body that does not hash to it: `BadDigest`, and the part is sent again), and
/// an ETag that is a hex MD5 must equal it (else S3 kept other bytes: sent again). Should the
/// presigned URLs refuse the header (403 `SignatureDoesNotMatch` on a PUT carrying it), every
/// part of this upload goes on without it (`with_md5` turns false) and says so in the log.
fn put_part(
    agent: &ureq::Agent,
    plan: &PartPlan<'_>,
    index: usize,
    offset: u64,
    sent: &AtomicU64,
    with_md5: &AtomicBool,
) -> Result<(), PartError> {
    let part = &plan.parts[index];
    let md5 = part_md5(plan.path, offset, part.size)?;
    let sending_md5 = with_md5.load(Ordering::SeqCst);
    let mut file = File::open(plan.path).map_err(|e| PartError::File(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| PartError::File(e.to_string()))?
        .len();
    if offset + part.size > len {
        return Err(PartError::File(format!(
            "the file is now {len} bytes, shorter than the part at {offset}+{}",
            part.size
        )));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| PartError::File(e.to_string()))?;
    let mut body = Counted {
        inner: Paced(ExactReader {
            inner: file.take(part.size),
            left: part.size,
        }),
        taken: 0,
        cap: part.size.saturating_sub(1),
        sent,
    };
    let mut request = agent
        .put(&part.url)
        .config()
        .timeout_per_write(Some(plan.stall))
        .timeout_recv_response(Some(answer_wait(part.size, plan.stall)))
        .build()
        .header("content-length", part.size.to_string())
        .header("content-type", plan.content_type)
        .header("x-amz-acl", "private");
    if sending_md5 {
        request = request.header("content-md5", data_encoding::BASE64.encode(&md5));
    }
    let result = request.send(ureq::SendBody::from_reader(&mut body));
    let outcome = read_answer(result, plan.stall, part.size, &md5);
    let counted = body.taken.min(body.cap);
    match outcome {
        Ok(()) => sent.fetch_add(part.size - counted, Ordering::SeqCst),
        Err(_) => sent.fetch_sub(counted, Ordering::SeqCst),
    };
    match outcome {
        Err(PartError::Rejected(m))
            if sending_md5 && m.starts_with("HTTP 403 SignatureDoesNotMatch") =>
        {
            if with_md5.swap(false, Ordering::SeqCst) {
                log::warn!(
                    "{}: the part upload URLs refuse Content-MD5 (a signature without it): \
                     going on without it; S3's ETags are still compared",
                    plan.path.display()
                );
            }
            put_part(agent, plan, index, offset, sent, with_md5)
        }
        other => other,
    }
}

/// MD5 of `size` bytes of `path` from `offset` (read before the part is sent: the header
/// goes first).
fn part_md5(path: &Path, offset: u64, size: u64) -> Result<[u8; 16], PartError> {
    let file_err = |e: std::io::Error| PartError::File(e.to_string());
    let mut file = File::open(path).map_err(file_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(file_err)?;
    let mut reader = ExactReader {
        inner: file.take(size),
        left: size,
    };
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(file_err)?;
        if n == 0 {
            return Ok(md5.finalize().into());
        }
        md5.update(&buf[..n]);
    }
}

/// What S3's answer (or the lack of one) means for the part.
fn read_answer(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    stall: Duration,
    size: u64,
    md5: &[u8; 16],
) -> Result<(), PartError> {
    let mut response = match result {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(PartError::File(e.to_string()))
        }
        // The send timeout, or the kernel giving up on the peer (ETIMEDOUT): ureq reports
        // both as this.
        Err(ureq::Error::Timeout(ureq::Timeout::PerWrite)) => {
            return Err(PartError::Transient(format!(
                "no byte went out for {} s, or the connection timed out",
                stall.as_secs_f64().round()
            )))
        }
        Err(ureq::Error::Timeout(ureq::Timeout::RecvResponse)) => {
            return Err(PartError::Transient(format!(
                "no answer from S3 {} s after the last byte",
                answer_wait(size, stall).as_secs()
            )))
        }
        Err(e) => return Err(PartError::Transient(e.to_string())),
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        // A plain PUT's ETag is the MD5 of what S3 stored (not with SSE-KMS: then it is no
        // hex MD5 and says nothing).
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_ascii_lowercase());
        if let Some(etag) =
            etag.filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            let ours = data_encoding::HEXLOWER.encode(md5);
            if etag != ours {
                return Err(PartError::Transient(format!(
                    "S3 stored other bytes than were sent (ETag {etag}, the part's MD5 {ours})"
                )));
            }
        }
        return Ok(());
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let code = xml_field(&body, "Code").unwrap_or_default();
    let message = xml_field(&body, "Message").unwrap_or_default();
    let expired = status == 403
        && (code == "AccessDenied" && message.to_ascii_lowercase().contains("expired")
            || code == "ExpiredToken");
    if expired {
        Err(PartError::Expired)
    } else if code == "BadDigest" {
        Err(PartError::Transient(
            "S3 refused the part as corrupt on the way (BadDigest)".into(),
        ))
    } else if status >= 500 || status == 408 || status == 429 {
        Err(PartError::Transient(format!("HTTP {status} {code}")))
    } else {
        Err(PartError::Rejected(format!(
            "HTTP {status} {code}: {message}"
        )))
    }
}

/// The body of a part: counts the bytes the HTTP client takes (it takes the next buffer only
/// once the connection has accepted the previous one), for the page's progress. The last
/// byte counts only with S3's answer: what the connection took can still be on its way
/// (seconds of it on a slow link), and the page must not say 100 % before S3 has it all.
struct Counted<'a, R> {
    inner: R,
    taken: u64,
    /// The most `sent` grows by before S3 answers: the part's size less one byte.
    cap: u64,
    sent: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        crate::throughput::count_sent(n as u64);
        let before = self.taken.min(self.cap);
        self.taken += n as u64;
        self.sent
            .fetch_add(self.taken.min(self.cap) - before, Ordering::SeqCst);
        Ok(n)
    }
}

/// A body paced by `upload.bandwidth` (one bucket for every part of every job and the file
/// server). The HTTP client asks for the next buffer only between socket writes, so waiting
/// here never counts against the part's per-write stall timeout.
struct Paced<R>(R);

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bandwidth = crate::bandwidth::shared();
        let (grant, _) = bandwidth.take(buf.len());
        let result = self.0.read(&mut buf[..grant]);
        let used = *result.as_ref().unwrap_or(&0);
        bandwidth.give_back(grant - used);
        result
    }
}

/// A reader that fails instead of ending early, so a file truncated under us never sends a
/// short body with a promised length (the server would wait for bytes that never come).
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Text of the first `<tag>…</tag>` in an S3 XML error body.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_string())
}

/// How a batch of parts is sent.
pub struct PartPlan<'a> {
    pub path: &'a Path,
    pub parts: &'a [Part],
    /// Parts already uploaded (by index), e.g. before a restart.
    pub done: &'a [usize],
    pub content_type: &'a str,
    pub parallel: usize,
    /// Tries per part before giving up on the file for this attempt.
    pub tries: u32,
    /// Base of the backoff between tries of one part (doubles each time).
    pub backoff: Duration,
    /// A try that the connection takes no byte of for this long is cut ([`PART_STALL`]).
    pub stall: Duration,
    /// Send `Content-MD5` with every part (`upload.verify: "parts"`).
    pub md5: bool,
}

/// Sends every part not yet done, `parallel` at a time; `Ok(true)` when every part this
/// call sent carried `Content-MD5` (`false`: the URLs refused it). `on_done(index)` is called as each part
/// finishes (the caller records it durably); `sent` counts the bytes the connections have
/// taken (the caller starts it at what is already done). When `stop` fires (or closes),
/// every part in flight is cut at once (the agent is shut down: this is for the end of the
/// process) and the answer is `Stopped`.
pub fn put_parts(
    agent: &ureq::Agent,
    plan: &PartPlan<'_>,
    sent: &AtomicU64,
    on_done: &(dyn Fn(usize) + Sync),
    stop: &Receiver<()>,
) -> Result<bool, PartError> {
    let offsets = offsets(plan.parts);
    let todo: Vec<usize> = (0..plan.parts.len())
        .filter(|i| !plan.done.contains(i))
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<PartError>> = Mutex::new(None);
    let with_md5 = AtomicBool::new(plan.md5);
    let workers = plan.parallel.clamp(1, todo.len().max(1));
    let (finished, all_finished) = bounded::<()>(0);
    std::thread::scope(|scope| {
        // A part on a slow link can take many minutes: shutdown must not wait for it.
        scope.spawn(|| {
            select! {
                recv(stop) -> _ => agent.clone().shutdown(),
                recv(all_finished) -> _ => {}
            }
        });
        let senders: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(&index) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    match put_with_retries(
                        agent,
                        plan,
                        index,
                        offsets[index],
                        sent,
                        stop,
                        &with_md5,
                    ) {
                        Ok(()) => on_done(index),
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            return;
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            // A panic ends the process (panic = "abort"); nothing to recover here.
            let _ = s.join();
        }
        drop(finished);
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(with_md5.load(Ordering::SeqCst)),
    }
}

fn stopping(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(TryRecvError::Empty))
}

fn put_with_retries(
    agent: &ureq::Agent,
    plan: &PartPlan<'_>,
    index: usize,
    offset: u64,
    sent: &AtomicU64,
    stop: &Receiver<()>,
    with_md5: &AtomicBool,
) -> Result<(), PartError> {
    let mut delay = plan.backoff;
    let mut tries = 0;
    let name = plan
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    loop {
        if stopping(stop) {
            return Err(PartError::Stopped);
        }
        tries += 1;
        match put_part(agent, plan, index, offset, sent, with_md5) {
            Ok(()) => return Ok(()),
            // The agent was shut down under the request.
            Err(_) if stopping(stop) => return Err(PartError::Stopped),
            Err(PartError::Transient(m)) if tries < plan.tries => {
                log::info!(
                    "{name}: part {} of {}: {m}; sending it again in {} s (the other parts go on)",
                    index + 1,
                    plan.parts.len(),
                    delay.as_secs_f64()
                );
                if !matches!(stop.recv_timeout(delay), Err(RecvTimeoutError::Timeout)) {
                    return Err(PartError::Stopped);
                }
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_md5_is_rfc_1321_of_that_slice_and_its_header_standard_base64() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("clip.mov");
        std::fs::write(&path, b"xxabcyy").unwrap();
        let md5 = part_md5(&path, 2, 3).unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&md5),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            data_encoding::BASE64.encode(&md5),
            "kAFQmDzST7DWlj99KOF/cg=="
        );
        let empty = part_md5(&path, 7, 0).unwrap();
        assert_eq!(
            data_encoding::BASE64.encode(&empty),
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
        // A file shorter than the part is an error, never a short digest.
        assert!(matches!(part_md5(&path, 5, 3), Err(PartError::File(_))));
    }

    #[test]
    fn offsets_follow_part_sizes() {
        let parts = [10, 10, 7].map(|size| Part {
            url: String::new(),
            size,
        });
        assert_eq!(offsets(&parts), vec![0, 10, 20]);
    }

    #[test]
    fn parts_must_cover_the_file_exactly() {
        let parts = |sizes: &[u64]| -> Vec<Part> {
            sizes
                .iter()
                .map(|&size| Part {
                    url: String::new(),
                    size,
                })
                .collect()
        };
        // The docs' 50,645,990-byte example, and the SDK's 35 parts of a large file.
        assert_eq!(
            check_layout(&parts(&[16_881_997, 16_881_997, 16_881_996]), 50_645_990),
            Ok(())
        );
        let mut big = vec![3_000_000_000u64; 34];
        big.push(1_234);
        assert_eq!(check_layout(&parts(&big), 102_000_001_234), Ok(()));
        assert_eq!(check_layout(&parts(&[0]), 0), Ok(()));
        let short = check_layout(&parts(&[10, 10]), 25).unwrap_err();
        assert!(
            short.contains("add up to 20 bytes, not the file's 25") && short.contains("a hole")
        );
        let long = check_layout(&parts(&[10, 10]), 15).unwrap_err();
        assert!(long.contains("an overlap"), "{long}");
        let empty = check_layout(&parts(&[10, 0, 5]), 15).unwrap_err();
        assert!(empty.contains("part 2 of 3"), "{empty}");
        assert!(check_layout(&parts(&[u64::MAX, 2]), 1).is_err());
    }

    #[test]
    fn the_answer_may_take_what_the_connection_holds_at_a_slow_link() {
        let stall = Duration::from_secs(60);
        assert_eq!(answer_wait(0, stall), stall);
        assert_eq!(
            answer_wait(1_000_000, stall),
            stall + Duration::from_secs(20)
        );
        // Whatever the part size, only what a connection can hold is still on its way.
        assert_eq!(
            answer_wait(1 << 40, stall),
            answer_wait(MAX_IN_FLIGHT, stall)
        );
        assert_eq!(
            answer_wait(MAX_IN_FLIGHT, stall),
            stall + Duration::from_secs(336)
        );
    }

    #[test]
    fn s3_error_fields_are_read() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                   <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(
            xml_field(xml, "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert!(xml_field(xml, "Message")
            .unwrap()
            .starts_with("The request"));
        assert_eq!(xml_field(xml, "Nope"), None);
    }

    #[test]
    fn an_exact_reader_refuses_to_end_early() {
        let mut r = ExactReader {
            inner: &b"abc"[..],
            left: 5,
        };
        let mut buf = Vec::new();
        let err = r.read_to_end(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
