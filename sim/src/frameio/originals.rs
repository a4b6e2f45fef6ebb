//! Kept originals (`Options::originals_dir`): where a file's bytes land as they arrive, the
//! `media_links` of `include=media_links.original`, and the presigned download they point to.
//!
//! ```text
//! GET|HEAD /s3/originals/{file_id}?X-Amz-Date&X-Amz-Expires&X-Amz-Signature…   no auth header
//! ```
//!
//! 200 (or 206 for a `Range`) with `Content-Length`, `Content-Type` (the file's media type),
//! `ETag`, `Accept-Ranges: bytes`, the bytes streamed from disk; 416 with `Content-Range:
//! bytes */<size>` for a range past the end; S3's XML errors otherwise (403
//! `SignatureDoesNotMatch` / `AccessDenied` "Request has expired", 404 `NoSuchKey`).

use super::options::{take_one, Faults};
use super::state::{DownloadRecord, FileData, NodeKind};
use super::{Meta, Shared};
use crate::util::{amz_date, parse_amz_date, query_get, sha256_hex, unix_ms};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Path prefix of download URLs.
pub(crate) const PREFIX: &str = "/s3/originals/";
const ENDPOINT: &str = "download_original";

/// Where a file's bytes go as they arrive: `<originals_dir>/<id>` when originals are kept
/// (`true`), else a staging file `<data_dir>/<prefix>-<id>`, removed once hashed (`false`).
pub(crate) fn landing(shared: &Shared, prefix: &str, id: &str) -> (PathBuf, bool) {
    match &shared.originals_dir {
        Some(dir) => (dir.join(id), true),
        None => (shared.data_dir.join(format!("{prefix}-{id}")), false),
    }
}

/// `corrupt_original_next`: called once a kept original holds every byte and was hashed, just
/// before its file becomes complete. Changes its middle byte when the knob says so; whether
/// it did.
pub(crate) fn corrupt_if_asked(shared: &Shared, path: &Path, size: u64) -> bool {
    if size == 0 || !take_one(&mut shared.faults().corrupt_original_next) {
        return false;
    }
    let flipped = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|mut f| {
            let mut b = [0u8; 1];
            f.seek(SeekFrom::Start(size / 2))?;
            f.read_exact(&mut b)?;
            b[0] ^= 0x5a;
            f.seek(SeekFrom::Start(size / 2))?;
            f.write_all(&b)
        });
    match flipped {
        Ok(()) => {
            log::info!(
                "frameio-sim: changed byte {} of the kept original {}",
                size / 2,
                path.display()
            );
            true
        }
        Err(e) => {
            log::warn!("frameio-sim: cannot corrupt {}: {e}", path.display());
            false
        }
    }
}

fn signature(secret: &str, path: &str, date: &str, expires: &str) -> String {
    sha256_hex(format!("{secret}\nGET\n{path}\n{date}\n{expires}").as_bytes())
}

/// A presigned-looking URL for a file's kept original on the simulator's own server.
pub(crate) fn download_url(
    base: &str,
    secret: &str,
    file_id: &str,
    now: SystemTime,
    lifetime_secs: u64,
) -> String {
    let path = format!("{PREFIX}{file_id}");
    let date = amz_date(now);
    let expires = lifetime_secs.to_string();
    let sig = signature(secret, &path, &date, &expires);
    format!(
        "{base}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=ASIASIMULATOR%2F{day}%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={sig}",
        day = &date[..8],
    )
}

/// The `media_links` object of a file shown with `include=media_links…`: `original` holds
/// `download_url` and `inline_url` once the file is complete, its bytes kept and
/// `original_missing_ms` past; every other rendition is null (the sim transcodes nothing).
pub(crate) fn media_links(
    shared: &Shared,
    secret: &str,
    file_id: &str,
    f: &FileData,
    faults: &Faults,
) -> Value {
    let now = SystemTime::now();
    let shown = f.original.is_some()
        && f.completed_at
            .is_some_and(|t| now >= t + Duration::from_millis(faults.original_missing_ms));
    let original = if shown {
        let url = download_url(
            &shared.base_url,
            secret,
            file_id,
            now,
            faults.download_url_lifetime_secs,
        );
        json!({"download_url": url, "inline_url": url})
    } else {
        Value::Null
    };
    json!({
        "original": original,
        "thumbnail": null,
        "thumbnail_high_quality": null,
        "video_h264_180": null,
        "high_quality": null,
        "efficient": null,
    })
}

fn xml_error(
    status: u16,
    code: &str,
    message: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>SIMREQUEST0000002</RequestId>\
         <HostId>frameio-sim</HostId></Error>"
    );
    let mut r = tiny_http::Response::from_data(body.into_bytes()).with_status_code(status);
    for h in [
        header("Content-Type", "application/xml"),
        header("Server", "AmazonS3"),
    ]
    .into_iter()
    .flatten()
    {
        r.add_header(h);
    }
    r
}

/// A header; `None` for a value tiny_http refuses (never for the ones built here).
fn header(k: &str, v: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok()
}

/// What the checks before sending decided.
struct Found {
    path: PathBuf,
    size: u64,
    content_type: String,
    etag: String,
}

fn check(shared: &Shared, meta: &Meta) -> Result<Found, (u16, &'static str, String)> {
    if meta.method != "GET" && meta.method != "HEAD" {
        return Err((
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.".into(),
        ));
    }
    let file_id = meta.path.strip_prefix(PREFIX).unwrap_or("");
    let bad_sig = || {
        (
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method."
                .to_string(),
        )
    };
    let q = &meta.query;
    let (Some(date), Some(expires), Some(sig)) = (
        query_get(q, "X-Amz-Date"),
        query_get(q, "X-Amz-Expires"),
        query_get(q, "X-Amz-Signature"),
    ) else {
        return Err(bad_sig());
    };
    let secret = shared.lock().s3_secret.clone();
    if signature(&secret, &meta.path, date, expires) != sig {
        return Err(bad_sig());
    }
    let (Some(signed_at), Ok(lifetime)) = (parse_amz_date(date), expires.parse::<u64>()) else {
        return Err(bad_sig());
    };
    if SystemTime::now() > signed_at + Duration::from_secs(lifetime) {
        return Err((403, "AccessDenied", "Request has expired".into()));
    }
    if meta.header("authorization").is_some() {
        return Err((
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified"
                .into(),
        ));
    }
    let st = shared.lock();
    let no_key = || {
        (
            404,
            "NoSuchKey",
            "The specified key does not exist.".to_string(),
        )
    };
    let Some(NodeKind::File(f)) = st.nodes.get(file_id).map(|n| &n.kind) else {
        return Err(no_key());
    };
    let (Some(path), Some(_)) = (&f.original, f.completed_at) else {
        return Err(no_key());
    };
    let tag = f.sha256.as_deref().unwrap_or("");
    Ok(Found {
        path: path.clone(),
        size: f.file_size,
        content_type: f
            .media_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
        etag: format!("\"{}\"", &tag[..tag.len().min(32)]),
    })
}

/// A `Range` header against `size`: `Ok(None)` for the whole object (no header, or one S3
/// would ignore: several ranges, not bytes, malformed), `Ok(Some((first, last)))`, or
/// `Err(())` when unsatisfiable (416).
fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last b bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        return Ok(Some((size.saturating_sub(n), size - 1)));
    }
    let Ok(first) = a.parse::<u64>() else {
        return Ok(None);
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(v) if v >= first => v,
            _ => return Ok(None),
        }
    };
    if first >= size {
        return Err(());
    }
    Ok(Some((first, last.min(size - 1))))
}

/// Streams the kept file, counting what it hands out, and holds still once
/// `download_stall_after` bytes went out.
struct Sending<R> {
    inner: R,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
}

impl<R: Read> Read for Sending<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut want = buf.len();
        loop {
            let sent = self.sent.load(Ordering::SeqCst);
            match self.shared.faults().download_stall_after {
                Some(limit) if sent >= limit => {}
                Some(limit) => {
                    want = want.min(usize::try_from(limit - sent).unwrap_or(usize::MAX));
                    break;
                }
                None => break,
            }
            if self.shared.stopped.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("simulator stopped"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

/// Answers `GET|HEAD /s3/originals/{file_id}?…` itself (the body is streamed from disk, not
/// built in memory), counting it as `download_original <status>` and logging it.
pub(crate) fn serve(shared: &Arc<Shared>, meta: &Meta, rq: tiny_http::Request) {
    let file_id = meta.path.strip_prefix(PREFIX).unwrap_or("").to_string();
    let range_header = meta.header("range").map(str::to_string);
    let found = check(shared, meta);
    let record = DownloadRecord {
        file_id,
        method: meta.method.clone(),
        range: range_header.clone(),
        status: 0,
        bytes_sent: 0,
        at_ms: unix_ms(SystemTime::now()),
    };
    let found = match found {
        Ok(f) => f,
        Err((status, code, message)) => {
            log_start(shared, record, status);
            let _ = rq.respond(xml_error(status, code, &message));
            return;
        }
    };
    let range = match parse_range(range_header.as_deref(), found.size) {
        Ok(r) => r,
        Err(()) => {
            log_start(shared, record, 416);
            let mut r = xml_error(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
            if let Some(h) = header("Content-Range", &format!("bytes */{}", found.size)) {
                r.add_header(h);
            }
            let _ = rq.respond(r);
            return;
        }
    };
    let (first, len, status) = match range {
        Some((a, b)) => (a, b - a + 1, 206),
        None => (0, found.size, 200),
    };
    let file = std::fs::File::open(&found.path).and_then(|mut f| {
        f.seek(SeekFrom::Start(first))?;
        Ok(f)
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            log::warn!("frameio-sim: kept original {}: {e}", found.path.display());
            log_start(shared, record, 500);
            let _ = rq.respond(xml_error(500, "InternalError", &e.to_string()));
            return;
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let body = Sending {
        inner: file.take(len),
        shared: Arc::clone(shared),
        sent: Arc::clone(&sent),
    };
    let content_range = range.map(|(a, b)| format!("bytes {a}-{b}/{}", found.size));
    let headers: Vec<tiny_http::Header> = [
        header("Content-Type", &found.content_type),
        header("ETag", &found.etag),
        header("Accept-Ranges", "bytes"),
        header("Server", "AmazonS3"),
        content_range.and_then(|v| header("Content-Range", &v)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        body,
        Some(usize::try_from(len).unwrap_or(usize::MAX)),
        None,
    )
    // Always `Content-Length`, never chunked, whatever the size.
    .with_chunked_threshold(usize::MAX);
    let file_id = record.file_id.clone();
    // Logged and counted before the body goes out, so a stalled download shows at once.
    let index = log_start(shared, record, status);
    if let Err(e) = rq.respond(response) {
        log::debug!("frameio-sim: download of {file_id} ended: {e}");
    }
    if let Some(r) = shared.lock().download_log.get_mut(index) {
        r.bytes_sent = sent.load(Ordering::SeqCst);
    }
}

/// Logs and counts a download as it starts; the index of its record.
fn log_start(shared: &Shared, mut record: DownloadRecord, status: u16) -> usize {
    let mut st = shared.lock();
    record.status = status;
    st.download_log.push(record);
    st.count(ENDPOINT, status);
    st.download_log.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_s3_reads_them() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=5-99"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn download_urls_are_signed_and_expire() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_968_873);
        let u = download_url("http://h", "k", "abc", t, 3600);
        assert!(u.starts_with("http://h/s3/originals/abc?"), "{u}");
        assert!(u.contains("X-Amz-Expires=3600"));
        assert!(u.contains("X-Amz-Date=20250626T201433Z"));
        assert!(u.contains(&format!(
            "X-Amz-Signature={}",
            signature("k", "/s3/originals/abc", "20250626T201433Z", "3600")
        )));
    }
}
