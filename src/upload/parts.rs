//! Local upload: PUT each part of a file to its presigned S3 URL.
//!
//! Every part is streamed from the file (never read whole into memory) with an exact
//! `Content-Length` (never chunked: S3 answers 411 to chunked bodies), the `Content-Type`
//! Frame.io returned as `media_type`, or `application/octet-stream` when it returned none (the
//! same for every part, it is part of the signature) and `x-amz-acl: private` (also signed). Presigned URLs carry their authorisation in the
//! query string: no `Authorization` header, and the URL itself is a secret (never logged).
//! Parts go up `parallel` at a time; a failed part is retried on its own.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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

/// The HTTP agent for part PUTs: S3's XML error bodies are read (not turned into bare status
/// errors), a stalled connection fails instead of hanging, and the global timeout is left
/// to each request, scaled to its part (see `put_part`).
pub fn s3_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        // S3 answers as soon as the body is in; a longer silence is a dead connection.
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends one part. `offset`/`size` select the bytes of `path`.
pub fn put_part(
    agent: &ureq::Agent,
    path: &Path,
    part: &Part,
    offset: u64,
    content_type: &str,
) -> Result<(), PartError> {
    let mut file = File::open(path).map_err(|e| PartError::File(e.to_string()))?;
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
    let body = ExactReader {
        inner: file.take(part.size),
        left: part.size,
    };
    // The body timeout covers the whole part: allow at least 1 MB/s (and 30 s), so a slow
    // uplink is fine but a stalled connection fails fast and the part is retried on its own.
    let body_timeout = Duration::from_secs(30.max(part.size / 1_000_000));
    let result = agent
        .put(&part.url)
        .config()
        .timeout_send_body(Some(body_timeout))
        .build()
        .header("content-length", part.size.to_string())
        .header("content-type", content_type)
        .header("x-amz-acl", "private")
        .send(ureq::SendBody::from_owned_reader(body));
    let mut response = match result {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(PartError::File(e.to_string()))
        }
        Err(e) => return Err(PartError::Transient(e.to_string())),
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
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
    } else if status >= 500 || status == 408 || status == 429 {
        Err(PartError::Transient(format!("HTTP {status} {code}")))
    } else {
        Err(PartError::Rejected(format!(
            "HTTP {status} {code}: {message}"
        )))
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
}

/// Sends every part not yet done, `parallel` at a time. `on_done(index)` is called as each part
/// finishes (the caller records it durably). `stopped()` is polled between parts.
pub fn put_parts(
    agent: &ureq::Agent,
    plan: &PartPlan<'_>,
    on_done: &(dyn Fn(usize) + Sync),
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<(), PartError> {
    let offsets = offsets(plan.parts);
    let todo: Vec<usize> = (0..plan.parts.len())
        .filter(|i| !plan.done.contains(i))
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<PartError>> = Mutex::new(None);
    let workers = plan.parallel.clamp(1, todo.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let Some(&index) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let result = put_with_retries(agent, plan, index, offsets[index], stopped);
                match result {
                    Ok(()) => on_done(index),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn put_with_retries(
    agent: &ureq::Agent,
    plan: &PartPlan<'_>,
    index: usize,
    offset: u64,
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<(), PartError> {
    let mut delay = plan.backoff;
    let mut tries = 0;
    loop {
        if stopped() {
            return Err(PartError::Stopped);
        }
        tries += 1;
        match put_part(
            agent,
            plan.path,
            &plan.parts[index],
            offset,
            plan.content_type,
        ) {
            Ok(()) => return Ok(()),
            Err(PartError::Transient(m)) if tries < plan.tries => {
                log::debug!(
                    "part {} of {}: {m}; retrying in {delay:?}",
                    index + 1,
                    plan.parts.len()
                );
                std::thread::sleep(delay);
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
    fn offsets_follow_part_sizes() {
        let parts = [10, 10, 7].map(|size| Part {
            url: String::new(),
            size,
        });
        assert_eq!(offsets(&parts), vec![0, 10, 20]);
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
