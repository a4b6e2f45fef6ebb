//! S3 stand-in for presigned part PUTs: the URLs handed out in `upload_urls`, the header rules
//! S3 enforces on them, staging of part bytes on disk, and the "stitching" once all parts
//! are in.

use super::options::take_one;
use super::state::{NodeKind, S3PutRecord};
use super::{Meta, Reply, Shared};
use crate::util::{amz_date, hex, parse_amz_date, query_get, sha256_hex};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const ENDPOINT: &str = "s3_put_part";

/// Part sizes for a local upload of `size` bytes: one part below `single_part_below`, else
/// `n = ceil(size / part_size)` parts of `ceil(size / n)` bytes, the last taking the
/// remainder (which is what Frame.io's documented 50,645,990-byte example shows). The real
/// part-count rule is undocumented; `part_size` is the simulator's knob for it.
pub fn part_sizes(size: u64, part_size: u64, single_part_below: u64) -> Vec<u64> {
    if size < single_part_below || part_size == 0 || size <= part_size {
        return vec![size];
    }
    let n = size.div_ceil(part_size);
    let chunk = size.div_ceil(n);
    let mut v = vec![chunk; (n - 1) as usize];
    // chunk <= part_size and n - 1 < size / part_size, so the remainder is positive.
    v.push(size - chunk * (n - 1));
    v
}

fn signature(secret: &str, path: &str, date: &str, expires: &str, count: &str) -> String {
    sha256_hex(format!("{secret}\n{path}\n{date}\n{expires}\n{count}").as_bytes())
}

/// A presigned-looking URL for one part, as Frame.io's newer docs show them
/// (`/parts/<file_id>/part_<n>`), signed with the simulator's secret.
pub(crate) fn part_url(
    base: &str,
    secret: &str,
    file_id: &str,
    n: u32,
    count: u32,
    now: SystemTime,
    lifetime_secs: u64,
) -> String {
    let path = format!("/s3/parts/{file_id}/part_{n}");
    let date = amz_date(now);
    let expires = lifetime_secs.to_string();
    let count_s = count.to_string();
    let sig = signature(secret, &path, &date, &expires, &count_s);
    format!(
        "{base}{path}?x-amz-meta-part_number={n}&x-amz-meta-part_count={count}\
         &x-amz-meta-resource_type=asset&X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=ASIASIMULATOR%2F{day}%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date={date}&X-Amz-Expires={expires}\
         &X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-acl&X-Amz-Signature={sig}",
        day = &date[..8],
    )
}

fn xml_error(status: u16, code: &str, message: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>SIMREQUEST0000001</RequestId>\
         <HostId>frameio-sim</HostId></Error>"
    );
    Reply {
        status,
        headers: vec![
            ("Content-Type".into(), "application/xml".into()),
            ("Server".into(), "AmazonS3".into()),
        ],
        body: body.into_bytes(),
    }
}

/// What the checks before reading the body decided.
struct Target {
    file_id: String,
    part_number: u32,
    offset: u64,
    size: u64,
    /// Body bytes per second (0: no limit).
    rate: u64,
    /// Stop reading after this many bytes for this long (`s3_stall_next`).
    stall: Option<(u64, Duration)>,
    /// The `Content-MD5` digest the body must have.
    content_md5: Option<[u8; 16]>,
    /// Change a byte of the body on the way in (`s3_corrupt_every`).
    corrupt: bool,
}

/// Handles `PUT /s3/parts/{file_id}/part_{n}?…`.
///
/// Checks, in S3's order: URL signature (403 `SignatureDoesNotMatch`), expiry (403
/// `AccessDenied`), an `Authorization` header on top of a presigned URL (400
/// `InvalidArgument`: S3 allows only one auth mechanism), `Content-Length` present and not
/// chunked (411 `MissingContentLength`), signed headers `Content-Type` = the file's media type
/// (or `application/octet-stream` when it was null) and `x-amz-acl: private` (403
/// `SignatureDoesNotMatch`), then the body length against the part size (400
/// `IncompleteBody` / `EntityTooLarge`: stricter than S3, which would store a wrong-sized
/// part that Frame.io then cannot stitch).
pub(crate) fn put_part(
    shared: &Arc<Shared>,
    meta: &Meta,
    body: &mut dyn Read,
) -> (&'static str, Reply) {
    let checked = check(shared, meta);
    let (reply, body_len, code) = match checked {
        Err(r) => {
            // Drain so the connection stays usable; the count goes to the log.
            let n = std::io::copy(body, &mut std::io::sink()).unwrap_or(0);
            let code = error_code(&r);
            (r, n, code)
        }
        Ok(None) => {
            // File already assembled (or being assembled): accept and ignore, as a re-PUT to
            // S3 after Frame.io stitched the parts would change nothing visible.
            let mut h = Sha256::new();
            let mut md5 = md5::Md5::new();
            let mut tee = Md5Tee {
                inner: body,
                md5: &mut md5,
                corrupt: false,
            };
            let n = copy_hashing(&mut tee, &mut std::io::sink(), &mut h).unwrap_or(0);
            let md5 = <[u8; 16]>::from(md5.finalize());
            let sent = meta
                .header("content-md5")
                .and_then(unbase64)
                .and_then(|d| <[u8; 16]>::try_from(d).ok());
            if sent.is_some_and(|d| d != md5) {
                let r = xml_error(
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                );
                let code = error_code(&r);
                (r, n, code)
            } else {
                (md5_reply(&md5), n, None)
            }
        }
        Ok(Some(t)) => {
            let (r, n) = store(shared, &t, body);
            let code = error_code(&r);
            (r, n, code)
        }
    };
    let file_id = meta
        .path
        .strip_prefix("/s3/parts/")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
        .to_string();
    let part_number = meta
        .path
        .rsplit_once("/part_")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    shared.lock().s3_log.push(S3PutRecord {
        file_id,
        part_number,
        headers: meta.headers.clone(),
        body_len,
        status: reply.status,
        error_code: code,
    });
    (ENDPOINT, reply)
}

fn error_code(r: &Reply) -> Option<String> {
    if r.status == 200 {
        return None;
    }
    let s = String::from_utf8_lossy(&r.body);
    let start = s.find("<Code>")? + 6;
    let end = s[start..].find("</Code>")? + start;
    Some(s[start..end].to_string())
}

fn check(shared: &Shared, meta: &Meta) -> Result<Option<Target>, Reply> {
    if meta.method != "PUT" {
        return Err(xml_error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ));
    }
    let parsed = meta.path.strip_prefix("/s3/parts/").and_then(|r| {
        let (id, part) = r.split_once("/part_")?;
        Some((id.to_string(), part.parse::<u32>().ok()?))
    });
    let Some((file_id, part_number)) = parsed else {
        return Err(xml_error(
            404,
            "NoSuchKey",
            "The specified key does not exist.",
        ));
    };
    let q = &meta.query;
    let bad_sig = || {
        xml_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
        )
    };
    let (Some(date), Some(expires), Some(sig), Some(count)) = (
        query_get(q, "X-Amz-Date"),
        query_get(q, "X-Amz-Expires"),
        query_get(q, "X-Amz-Signature"),
        query_get(q, "x-amz-meta-part_count"),
    ) else {
        return Err(bad_sig());
    };
    let secret = shared.lock().s3_secret.clone();
    if signature(&secret, &meta.path, date, expires, count) != sig {
        return Err(bad_sig());
    }
    let (Some(signed_at), Ok(lifetime)) = (parse_amz_date(date), expires.parse::<u64>()) else {
        return Err(bad_sig());
    };
    if SystemTime::now() > signed_at + Duration::from_secs(lifetime) {
        return Err(xml_error(403, "AccessDenied", "Request has expired"));
    }
    if meta.header("authorization").is_some() {
        return Err(xml_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        ));
    }
    let chunked = meta.header("transfer-encoding").is_some();
    let declared = meta
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|_| !chunked) else {
        return Err(xml_error(
            411,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        ));
    };
    let st = shared.lock();
    let Some(node) = st.nodes.get(&file_id) else {
        return Err(xml_error(
            404,
            "NoSuchUpload",
            "The specified upload does not exist: the file was deleted.",
        ));
    };
    let NodeKind::File(f) = &node.kind else {
        return Err(bad_sig());
    };
    if meta.header("content-type") != Some(f.part_content_type.as_str())
        || meta.header("x-amz-acl") != Some("private")
    {
        return Err(bad_sig());
    }
    let Some(part) = f.parts.get(part_number.wrapping_sub(1) as usize) else {
        return Err(bad_sig());
    };
    let content_md5 = match meta.header("content-md5") {
        None => None,
        Some(_) if shared.faults().s3_refuse_content_md5 => return Err(bad_sig()),
        Some(v) => match unbase64(v).and_then(|d| <[u8; 16]>::try_from(d).ok()) {
            Some(d) => Some(d),
            None => {
                return Err(xml_error(
                    400,
                    "InvalidDigest",
                    "The Content-MD5 you specified was invalid.",
                ))
            }
        },
    };
    if declared < part.size {
        return Err(xml_error(
            400,
            "IncompleteBody",
            &format!(
                "You did not provide the number of bytes of this part: {declared} of {}",
                part.size
            ),
        ));
    }
    if declared > part.size {
        return Err(xml_error(
            400,
            "EntityTooLarge",
            &format!(
                "Your proposed upload exceeds this part's size: {declared} > {}",
                part.size
            ),
        ));
    }
    if f.completed_at.is_some() || f.assembling {
        return Ok(None);
    }
    let (offset, size) = (part.offset, part.size);
    drop(st);
    // This PUT's number among those whose body the simulator reads.
    let nth = {
        let mut st = shared.lock();
        st.s3_bodies += 1;
        st.s3_bodies
    };
    let mut faults = shared.faults();
    let stall = take_one(&mut faults.s3_stall_next).then(|| {
        (
            (1 << 20).min(size / 2),
            Duration::from_millis(faults.s3_stall_ms),
        )
    });
    let corrupt =
        faults.s3_corrupt_every > 0 && nth.is_multiple_of(u64::from(faults.s3_corrupt_every));
    Ok(Some(Target {
        file_id,
        part_number,
        offset,
        size,
        rate: faults.s3_bytes_per_sec,
        stall,
        content_md5,
        corrupt,
    }))
}

/// Reads at most `rate` bytes a second (a slow uplink as S3 sees it), and once `stall` says
/// so, stops reading for a while (a connection that hangs mid-part).
struct Throttled<R> {
    inner: R,
    rate: u64,
    stall: Option<(u64, Duration)>,
    started: Instant,
    read: u64,
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((after, pause)) = self.stall {
            if self.read >= after {
                self.stall = None;
                std::thread::sleep(pause);
                // The pause is not the uplink's fault: the rate counts from here.
                self.started = Instant::now();
                self.read = 0;
            }
        }
        let mut want = buf.len();
        if let Some((after, _)) = self.stall {
            want = want.min(
                usize::try_from(after - self.read)
                    .unwrap_or(usize::MAX)
                    .max(1),
            );
        }
        if self.rate > 0 {
            // A tenth of a second's worth at a time keeps the pace smooth.
            let slice = usize::try_from(self.rate / 10).unwrap_or(usize::MAX).max(1);
            want = want.min(slice);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.rate > 0 {
            let due = self.started + Duration::from_secs_f64(self.read as f64 / self.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }
}

fn copy_hashing(src: &mut dyn Read, dst: &mut dyn Write, h: &mut Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        h.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Writes the body at the part's offset in the upload's staging file.
fn store(shared: &Arc<Shared>, t: &Target, body: &mut dyn Read) -> (Reply, u64) {
    let (path, _) = super::originals::landing(shared, "upload", &t.file_id);
    let mut h = Sha256::new();
    let mut md5 = md5::Md5::new();
    let written = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(t.offset))?;
            let body = Throttled {
                inner: body.take(t.size),
                rate: t.rate,
                stall: t.stall,
                started: Instant::now(),
                read: 0,
            };
            let mut body = Md5Tee {
                inner: body,
                md5: &mut md5,
                corrupt: t.corrupt && t.size > 0,
            };
            copy_hashing(&mut body, &mut f, &mut h)
        });
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            let n = std::io::copy(body, &mut std::io::sink()).unwrap_or(0);
            log::warn!("frameio-sim: part {} of {}: {e}", t.part_number, t.file_id);
            return (
                xml_error(
                    400,
                    "IncompleteBody",
                    &format!("could not read the body: {e}"),
                ),
                n,
            );
        }
    };
    if n != t.size {
        return (
            xml_error(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            ),
            n,
        );
    }
    let md5 = <[u8; 16]>::from(md5.finalize());
    if t.content_md5.is_some_and(|want| want != md5) {
        // The part is not recorded as received: a PUT sent again overwrites these bytes.
        return (
            xml_error(
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ),
            n,
        );
    }
    let assemble = {
        let mut st = shared.lock();
        match st.nodes.get_mut(&t.file_id).map(|n| &mut n.kind) {
            Some(NodeKind::File(f)) => {
                f.staging = Some(path.clone());
                if let Some(p) = f.parts.get_mut(t.part_number as usize - 1) {
                    p.received = true;
                }
                let all = f.parts.iter().all(|p| p.received);
                if all && !f.assembling && f.completed_at.is_none() {
                    f.assembling = true;
                    true
                } else {
                    false
                }
            }
            // Deleted while we were writing.
            _ => {
                let _ = std::fs::remove_file(&path);
                false
            }
        }
    };
    if assemble {
        let shared = Arc::clone(shared);
        let id = t.file_id.clone();
        // Stitching happens after the last PUT was answered, as on Frame.io.
        let spawned = std::thread::Builder::new()
            .name("frameio-sim-assemble".into())
            .spawn(move || assemble_upload(&shared, &id, &path));
        if let Err(e) = spawned {
            log::error!("frameio-sim: cannot spawn the assembler: {e}");
        }
    }
    (md5_reply(&md5), n)
}

/// 200 with the ETag S3 gives a plain PUT: the hex MD5 of the bytes it stored, quoted.
/// Standard base64 (`Content-MD5`); `None` when it is not.
fn unbase64(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64.decode(s.trim().as_bytes()).ok()
}

fn md5_reply(md5: &[u8; 16]) -> Reply {
    Reply::empty(200)
        .with_header("ETag", &format!("\"{}\"", hex(md5)))
        .with_header("Server", "AmazonS3")
}

/// Hashes what is read (MD5), and changes the first byte of the body when `corrupt`.
struct Md5Tee<'a, R> {
    inner: R,
    md5: &'a mut md5::Md5,
    corrupt: bool,
}

impl<R: Read> Read for Md5Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.corrupt && n > 0 {
            buf[0] ^= 0x5a;
            self.corrupt = false;
        }
        self.md5.update(&buf[..n]);
        Ok(n)
    }
}

/// SHA-256 of the first `len` bytes of a file, streaming.
pub(crate) fn hash_file(path: &Path, len: u64) -> std::io::Result<(String, u64)> {
    let f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let n = copy_hashing(&mut f.take(len), &mut std::io::sink(), &mut h)?;
    Ok((hex(&h.finalize()), n))
}

fn assemble_upload(shared: &Arc<Shared>, id: &str, path: &Path) {
    let size = match shared.lock().nodes.get(id).map(|n| &n.kind) {
        Some(NodeKind::File(f)) => f.file_size,
        _ => {
            let _ = std::fs::remove_file(path);
            return;
        }
    };
    let hashed = if size == 0 {
        Ok((sha256_hex(b""), 0))
    } else {
        hash_file(path, size)
    };
    // With `Options::originals_dir` the staging file is the kept original.
    let keep = shared.originals_dir.is_some() && matches!(hashed, Ok((_, n)) if n == size);
    if !keep {
        let _ = std::fs::remove_file(path);
    }
    let lost = take_one(&mut shared.faults().never_complete_next);
    if !lost {
        super::fetch::slow_complete(shared, id);
    }
    let corrupted = keep && !lost && super::originals::corrupt_if_asked(shared, path, size);
    let mut completed = false;
    let mut st = shared.lock();
    let Some(NodeKind::File(f)) = st.nodes.get_mut(id).map(|n| &mut n.kind) else {
        // Deleted meanwhile.
        let _ = std::fs::remove_file(path);
        return;
    };
    f.assembling = false;
    f.staging = None;
    match hashed {
        Ok((sha, n)) if n == size => {
            f.sha256 = Some(sha);
            f.bytes_received = n;
            f.original = keep.then(|| path.to_path_buf());
            f.original_corrupted = corrupted;
            if lost {
                log::info!("frameio-sim: upload {id} has every part and never completes");
            } else {
                f.completed_at = Some(SystemTime::now());
                completed = true;
            }
        }
        Ok((_, n)) => {
            f.failed = true;
            f.failure_reason = Some(format!("assembled {n} bytes of {size}"));
        }
        Err(e) => {
            f.failed = true;
            f.failure_reason = Some(format!("assembling parts: {e}"));
        }
    }
    drop(st);
    if completed {
        super::review::file_completed(shared, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_documented_50_645_990_byte_example_splits_in_three() {
        // Frame.io's guide shows 16881997/16881997/16881996 for this size; with any part
        // size that yields three parts the arithmetic must give exactly that.
        assert_eq!(
            part_sizes(50_645_990, 20 * MIB, 10 * MIB),
            [16_881_997, 16_881_997, 16_881_996]
        );
        // With the default 25 MiB target the same file takes two parts.
        assert_eq!(
            part_sizes(50_645_990, 25 * MIB, 10 * MIB),
            [25_322_995, 25_322_995]
        );
    }

    #[test]
    fn small_files_get_one_part_and_parts_always_add_up() {
        assert_eq!(part_sizes(9 * MIB, MIB, 10 * MIB), [9 * MIB]);
        assert_eq!(part_sizes(0, 25 * MIB, 10 * MIB), [0]);
        for size in [1u64, 7, 99, 1000, 4097, 65_537, 10 * MIB + 3] {
            for ps in [1u64, 2, 3, 10, 4096] {
                let v = part_sizes(size, ps, 0);
                assert_eq!(v.iter().sum::<u64>(), size, "size {size} part {ps}");
                assert!(v.iter().all(|p| *p > 0 && *p <= ps));
                assert!(v.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn urls_carry_the_signed_headers_and_expiry() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_968_873);
        let u = part_url("http://h", "k", "abc", 2, 3, t, 86_400);
        assert!(u.starts_with("http://h/s3/parts/abc/part_2?"));
        assert!(u.contains("X-Amz-Expires=86400"));
        assert!(u.contains("X-Amz-Date=20250626T201433Z"));
        assert!(u.contains("X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-acl"));
    }
}
