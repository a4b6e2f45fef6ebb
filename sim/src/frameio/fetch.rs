//! The remote fetcher: what Frame.io does after a `remote_upload` (pull `source_url`).
//!
//! Memory stays bounded whatever the size: bytes go to a staging file at their offsets (the
//! kept original, with `Options::originals_dir`), then the file is hashed streaming. Every
//! HTTP request made is recorded for tests.

use super::options::{take_one, FetchMode};
use super::s3::hash_file;
use super::state::{FetchRecord, NodeKind};
use super::Shared;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where a source URL really goes.
pub(crate) struct Target {
    /// `http://127.0.0.1:PORT/path?query`
    pub url: String,
    /// `Host` to send when the URL was rewritten through the tunnel registry.
    pub host: Option<String>,
    pub connected_to: String,
}

/// Splits `scheme://authority/path?query`.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    Some((scheme, authority, path))
}

fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    authority.split_once(':').map_or(authority, |(h, _)| h)
}

/// Reads `<registry>/<hostname>` (one line, `127.0.0.1:PORT`), as written by the cloudflared
/// stand-in.
fn registry_lookup(registry: &Path, hostname: &str) -> Result<Option<String>, String> {
    let name = hostname.to_ascii_lowercase();
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(format!("invalid hostname {hostname:?}"));
    }
    match std::fs::read_to_string(registry.join(&name)) {
        Ok(s) => {
            let addr = s.lines().next().unwrap_or("").trim().to_string();
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "tunnel registry entry for {name} is not an address: {addr:?}"
                ));
            }
            Ok(Some(addr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading tunnel registry entry for {name}: {e}")),
    }
}

pub(crate) fn resolve(registry: Option<&Path>, source_url: &str) -> Result<Target, String> {
    let (scheme, authority, path) =
        split_url(source_url).ok_or_else(|| format!("not a URL: {source_url}"))?;
    let path = if path.is_empty() { "/" } else { path };
    let host = host_of(authority);
    let registered = match registry {
        Some(r) => registry_lookup(r, host)?,
        None => None,
    };
    match (scheme, registered) {
        (_, Some(addr)) => Ok(Target {
            url: format!("http://{addr}{path}"),
            host: Some(authority.to_string()),
            connected_to: addr,
        }),
        ("http", None) => Ok(Target {
            url: source_url.to_string(),
            host: None,
            connected_to: authority.to_string(),
        }),
        ("https", None) => Err(format!(
            "cannot resolve host {host}: not registered in the tunnel registry{}",
            if registry.is_none() {
                " (no registry configured)"
            } else {
                ""
            }
        )),
        (other, None) => Err(format!("unsupported URL scheme {other:?}")),
    }
}

fn agent(total_timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_global(total_timeout)
        .user_agent("frameio-sim-fetcher/1")
        .build()
        .into()
}

fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `HEAD source_url` before answering 202: learns the size (Frame.io's example response
/// already carries `file_size`). `None` when the source does not answer usefully.
pub(crate) fn probe_size(shared: &Shared, source_url: &str) -> Option<u64> {
    let mut rec = record("", source_url, "HEAD", None);
    let result = resolve(shared.registry.as_deref(), source_url).and_then(|t| {
        rec.connected_to = Some(t.connected_to.clone());
        let mut req = agent(Some(Duration::from_secs(5))).head(&t.url);
        if let Some(h) = &t.host {
            req = req.header("Host", h);
        }
        let resp = req.call().map_err(|e| e.to_string())?;
        rec.status = Some(resp.status().as_u16());
        match header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            Some(n) if resp.status().as_u16() == 200 => Ok(n),
            _ => Err("no usable Content-Length".to_string()),
        }
    });
    rec.error = result.as_ref().err().cloned();
    shared.lock().fetch_log.push(rec);
    result.ok()
}

fn record(file_id: &str, url: &str, method: &'static str, range: Option<String>) -> FetchRecord {
    FetchRecord {
        file_id: file_id.to_string(),
        source_url: url.to_string(),
        method,
        range,
        connected_to: None,
        status: None,
        bytes: 0,
        error: None,
    }
}

enum Plan {
    Drop,
    Fail,
    Fetch(FetchMode),
}

/// Starts pulling `source_url` for a file just created by `remote_upload`.
pub(crate) fn start(shared: Arc<Shared>, file_id: String, source_url: String) {
    let (plan, delay, parallelism, limit) = {
        let mut f = shared.faults();
        let plan = if take_one(&mut f.drop_fetches) {
            Plan::Drop
        } else if take_one(&mut f.fail_fetches) {
            Plan::Fail
        } else {
            Plan::Fetch(f.fetch_mode)
        };
        (
            plan,
            Duration::from_millis(f.fetch_delay_ms),
            f.fetch_parallelism.max(1),
            f.remote_size_limit,
        )
    };
    let mode = match plan {
        Plan::Drop => {
            // Frame.io's fetcher has been seen to lose a job: nothing ever happens.
            shared
                .lock()
                .fetch_log
                .push(record(&file_id, &source_url, "DROPPED", None));
            return;
        }
        Plan::Fail => None,
        Plan::Fetch(FetchMode::Alternate) => {
            let mut st = shared.lock();
            st.fetches_started += 1;
            Some(if st.fetches_started % 2 == 1 {
                FetchMode::Plain
            } else {
                FetchMode::Ranges
            })
        }
        Plan::Fetch(m) => Some(m),
    };
    let spawned = std::thread::Builder::new()
        .name("frameio-sim-fetch".into())
        .spawn(move || {
            std::thread::sleep(delay);
            let Some(mode) = mode else {
                shared
                    .lock()
                    .fetch_log
                    .push(record(&file_id, &source_url, "FAILED", None));
                finish(
                    &shared,
                    &file_id,
                    Err("injected fetch failure".into()),
                    None,
                );
                return;
            };
            let (staging, keep) = super::originals::landing(&shared, "fetch", &file_id);
            let job = Job {
                shared: &shared,
                file_id: &file_id,
                source_url: &source_url,
                staging: &staging,
                limit,
            };
            let result =
                resolve(shared.registry.as_deref(), &source_url).and_then(|t| match mode {
                    FetchMode::Ranges => job.ranges(&t, parallelism),
                    _ => job.plain(&t),
                });
            let result = result.and_then(|n| {
                hash_file(&staging, n)
                    .map_err(|e| format!("hashing the fetched bytes: {e}"))
                    .map(|(sha, _)| (n, sha))
            });
            let kept = (keep && result.is_ok()).then_some(staging.clone());
            if kept.is_none() {
                let _ = std::fs::remove_file(&staging);
            }
            finish(&shared, &file_id, result, kept);
        });
    if let Err(e) = spawned {
        log::error!("frameio-sim: cannot spawn a fetcher: {e}");
    }
}

/// Records the fetch's outcome. `kept`: the original holding every byte
/// (`Options::originals_dir`), removed here if the file was deleted meanwhile.
fn finish(
    shared: &Arc<Shared>,
    file_id: &str,
    result: Result<(u64, String), String>,
    kept: Option<PathBuf>,
) {
    let lost = result.is_ok() && take_one(&mut shared.faults().never_complete_next);
    if result.is_ok() && !lost {
        slow_complete(shared, file_id);
    }
    let corrupted = match (&result, &kept) {
        (Ok((n, _)), Some(path)) if !lost => super::originals::corrupt_if_asked(shared, path, *n),
        _ => false,
    };
    let completed = {
        let mut st = shared.lock();
        let Some(NodeKind::File(f)) = st.nodes.get_mut(file_id).map(|n| &mut n.kind) else {
            // Deleted meanwhile.
            if let Some(path) = kept {
                let _ = std::fs::remove_file(path);
            }
            return;
        };
        match result {
            Ok((n, sha)) => {
                f.file_size = n;
                f.bytes_received = n;
                f.sha256 = Some(sha);
                f.original = kept;
                f.original_corrupted = corrupted;
                if lost {
                    log::info!(
                        "frameio-sim: remote upload {file_id} got every byte and never completes"
                    );
                    false
                } else {
                    f.completed_at = Some(SystemTime::now());
                    true
                }
            }
            Err(reason) => {
                log::info!("frameio-sim: remote upload {file_id} failed: {reason}");
                f.failed = true;
                f.failure_reason = Some(reason);
                false
            }
        }
    };
    if completed {
        super::review::file_completed(shared, file_id);
    }
}

/// `slow_complete_next`: holds this background thread (a fetch's, or the part assembly's)
/// `slow_complete_ms` before the file becomes complete, or until it is deleted. The hold is
/// read again while it lasts, so lowering `slow_complete_ms` (`set_faults`) ends it early: a
/// test holds a file in processing for as long as it needs, then lets it finish.
pub(crate) fn slow_complete(shared: &Shared, file_id: &str) {
    let hold = {
        let mut faults = shared.faults();
        let ms = faults.slow_complete_ms;
        take_one(&mut faults.slow_complete_next).then_some(Duration::from_millis(ms))
    };
    let Some(hold) = hold else { return };
    log::info!("frameio-sim: {file_id} has every byte and completes in {hold:?}");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(shared.faults().slow_complete_ms) {
        if !shared.lock().nodes.contains_key(file_id) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Job<'a> {
    shared: &'a Shared,
    file_id: &'a str,
    source_url: &'a str,
    staging: &'a PathBuf,
    limit: u64,
}

impl Job<'_> {
    fn log(&self, rec: FetchRecord) {
        self.shared.lock().fetch_log.push(rec);
    }

    /// One `GET`: 200 with an exact `Content-Length`.
    fn plain(&self, t: &Target) -> Result<u64, String> {
        let mut rec = record(self.file_id, self.source_url, "GET", None);
        rec.connected_to = Some(t.connected_to.clone());
        let result = self.get_into(t, None, &mut rec, |resp| {
            if resp.status().as_u16() != 200 {
                return Err(format!("GET returned {}, expected 200", resp.status()));
            }
            let len = header(resp, "content-length")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("GET answer has no Content-Length")?;
            if len > self.limit {
                return Err(format!(
                    "source is {len} bytes, over the remote upload limit of {}",
                    self.limit
                ));
            }
            Ok((0, len))
        });
        rec.error = result.as_ref().err().cloned();
        self.log(rec);
        result
    }

    /// `Range: bytes=0-0` for the size, then parallel ranges, each expecting 206 with the
    /// exact `Content-Range` and length.
    fn ranges(&self, t: &Target, parallelism: usize) -> Result<u64, String> {
        let size = self.probe_range(t)?;
        if size > self.limit {
            return Err(format!(
                "source is {size} bytes, over the remote upload limit of {}",
                self.limit
            ));
        }
        std::fs::File::create(self.staging).map_err(|e| format!("staging file: {e}"))?;
        if size == 0 {
            return Ok(0);
        }
        let k = (parallelism as u64).min(size);
        let chunk = size.div_ceil(k);
        let ranges: Vec<(u64, u64)> = (0..k)
            .map(|i| (i * chunk, ((i + 1) * chunk).min(size) - 1))
            .filter(|(a, b)| a <= b)
            .collect();
        let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(a, b)| s.spawn(move || self.one_range(t, a, b, size)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("range thread panicked".into()))
                })
                .collect()
        });
        let mut total = 0;
        for r in results {
            total += r?;
        }
        Ok(total)
    }

    fn probe_range(&self, t: &Target) -> Result<u64, String> {
        let range = "bytes=0-0".to_string();
        let mut rec = record(self.file_id, self.source_url, "GET", Some(range.clone()));
        rec.connected_to = Some(t.connected_to.clone());
        let result = (|| {
            let mut req = agent(None).get(&t.url).header("Range", &range);
            if let Some(h) = &t.host {
                req = req.header("Host", h);
            }
            let mut resp = req.call().map_err(|e| format!("GET {range}: {e}"))?;
            let status = resp.status().as_u16();
            rec.status = Some(status);
            let cr = header(&resp, "content-range").unwrap_or("").to_string();
            let mut sink = Vec::new();
            let n = resp
                .body_mut()
                .as_reader()
                .take(1024)
                .read_to_end(&mut sink)
                .map_err(|e| format!("GET {range}: reading: {e}"))?;
            rec.bytes = n as u64;
            match status {
                206 => {
                    let total = cr
                        .strip_prefix("bytes 0-0/")
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(format!("206 with a bad Content-Range {cr:?}"))?;
                    Ok(total)
                }
                416 if cr == "bytes */0" => Ok(0),
                200 => Err("source ignored the Range header (200 instead of 206)".into()),
                other => Err(format!("GET {range} returned {other}, expected 206")),
            }
        })();
        rec.error = result.as_ref().err().cloned();
        self.log(rec);
        result
    }

    fn one_range(&self, t: &Target, a: u64, b: u64, size: u64) -> Result<u64, String> {
        let range = format!("bytes={a}-{b}");
        let mut rec = record(self.file_id, self.source_url, "GET", Some(range.clone()));
        rec.connected_to = Some(t.connected_to.clone());
        let want_cr = format!("bytes {a}-{b}/{size}");
        let result = self.get_into(t, Some(&range), &mut rec, |resp| {
            let status = resp.status().as_u16();
            if status != 206 {
                return Err(format!("GET {range} returned {status}, expected 206"));
            }
            let cr = header(resp, "content-range").unwrap_or("");
            if cr != want_cr {
                return Err(format!(
                    "GET {range}: Content-Range {cr:?}, expected {want_cr:?}"
                ));
            }
            let len = header(resp, "content-length").and_then(|v| v.parse::<u64>().ok());
            if len != Some(b - a + 1) {
                return Err(format!(
                    "GET {range}: Content-Length {len:?}, expected {}",
                    b - a + 1
                ));
            }
            Ok((a, b - a + 1))
        });
        rec.error = result.as_ref().err().cloned();
        self.log(rec);
        result
    }

    /// Sends a GET, lets `accept` check the head and say where the body goes (offset, exact
    /// length), then streams the body into the staging file.
    fn get_into(
        &self,
        t: &Target,
        range: Option<&str>,
        rec: &mut FetchRecord,
        accept: impl FnOnce(&ureq::http::Response<ureq::Body>) -> Result<(u64, u64), String>,
    ) -> Result<u64, String> {
        let mut req = agent(None).get(&t.url);
        if let Some(h) = &t.host {
            req = req.header("Host", h);
        }
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let mut resp = req.call().map_err(|e| format!("GET {}: {e}", t.url))?;
        rec.status = Some(resp.status().as_u16());
        let (offset, len) = accept(&resp)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.staging)
            .map_err(|e| format!("staging file: {e}"))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("staging file: {e}"))?;
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    rec.bytes = got;
                    return Err(format!("body broke off after {got} of {len} bytes: {e}"));
                }
            };
            got += n as u64;
            if got > len {
                rec.bytes = got;
                return Err(format!("body longer than the announced {len} bytes"));
            }
            file.write_all(&buf[..n])
                .map_err(|e| format!("staging file: {e}"))?;
        }
        rec.bytes = got;
        if got != len {
            return Err(format!("body has {got} bytes, Content-Length said {len}"));
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_directly_or_through_the_registry() {
        let dir = std::env::temp_dir().join(format!("sim-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("abc-def.trycloudflare.com"), "127.0.0.1:4567\n").unwrap();

        let t = resolve(Some(&dir), "https://abc-def.trycloudflare.com/f/tok/a.mov").unwrap();
        assert_eq!(t.url, "http://127.0.0.1:4567/f/tok/a.mov");
        assert_eq!(t.host.as_deref(), Some("abc-def.trycloudflare.com"));

        let t = resolve(Some(&dir), "http://127.0.0.1:9/x?y=1").unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9/x?y=1");
        assert!(t.host.is_none());

        let e = resolve(Some(&dir), "https://nope.trycloudflare.com/x")
            .err()
            .unwrap();
        assert!(e.contains("not registered"), "{e}");
        assert!(resolve(None, "https://abc-def.trycloudflare.com/x").is_err());
        assert!(resolve(Some(&dir), "https://../x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
