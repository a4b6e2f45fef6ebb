//! The door Frame.io's webhook deliveries come in by: `POST /hooks/frameio/<path token>` on
//! the public file server, open only while the review loop is on.
//!
//! A delivery passes only with everything right: the path token, a body of at most
//! [`MAX_BODY`] bytes, an `X-Frameio-Request-Timestamp` within [`MAX_SKEW`] of our clock,
//! and an `X-Frameio-Signature` (`v0=` hex HMAC-SHA256 of `v0:<timestamp>:<body>`) made with
//! the secret of one of our webhooks, compared in constant time (`ring::hmac::verify`). It is
//! answered at once and handed to the review follower through a bounded channel (the work,
//! Frame.io calls included, happens there). A repeat (same type, resource and timestamp) is
//! answered 200 and dropped. Anything refused changes nothing and logs a WARN at most once a
//! minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use serde_json::Value;

/// Largest delivery body accepted (Frame.io's carry a handful of ids).
pub const MAX_BODY: u64 = 64 * 1024;
/// How far a delivery's timestamp may be from our clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// How long a delivery is remembered to drop its repeats: a repeat with the same timestamp
/// older than `MAX_SKEW` is refused as stale anyway.
const REMEMBER: Duration = Duration::from_secs(6 * 60);
/// Deliveries remembered at most (a flood of valid ones cannot grow memory without bound).
const REMEMBER_MAX: usize = 10_000;
/// Refusals are logged at WARN at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A delivery that passed, for the follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `file.ready`, `comment.created`, …
    pub kind: String,
    pub account_id: String,
    pub resource_id: String,
    pub resource_type: String,
}

/// What the gate answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 202: taken, handled after.
    Accepted,
    /// 200: a repeat, dropped.
    Repeat,
    /// 401 (bad signature, stale timestamp, malformed): nothing done.
    Unauthorized(&'static str),
    /// 413: too big, nothing read.
    TooLarge,
    /// 404: the review loop is off, or not our path.
    NotFound,
    /// 503: the follower is far behind; Frame.io retries later.
    Busy,
}

impl Verdict {
    pub fn status(&self) -> u16 {
        match self {
            Verdict::Accepted => 202,
            Verdict::Repeat => 200,
            Verdict::Unauthorized(_) => 401,
            Verdict::TooLarge => 413,
            Verdict::NotFound => 404,
            Verdict::Busy => 503,
        }
    }
}

/// Where deliveries may come in, and with which secrets.
struct Open {
    path_token: String,
    secrets: Vec<String>,
    to: Sender<Delivery>,
}

/// Shared by the file server (which asks) and the follower (which opens and closes it).
#[derive(Default)]
pub struct Gate {
    open: Mutex<Option<Open>>,
    seen: Mutex<Seen>,
    warned: Mutex<Option<Instant>>,
    /// Refusals since the last WARN (said in the next one).
    refused: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Seen {
    keys: HashMap<(String, String, String), Instant>,
    order: VecDeque<((String, String, String), Instant)>,
}

impl Seen {
    fn forget_old(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER && self.order.len() <= REMEMBER_MAX {
                break;
            }
            if self.keys.get(key) == Some(at) {
                self.keys.remove(key);
            }
            self.order.pop_front();
        }
    }
}

impl Gate {
    /// Opens the door at `/hooks/frameio/<path_token>` for deliveries signed with one of
    /// `secrets` (one webhook per workspace), sent to `to`.
    pub fn open(&self, path_token: &str, secrets: Vec<String>, to: Sender<Delivery>) {
        *lock(&self.open) = Some(Open {
            path_token: path_token.to_string(),
            secrets,
            to,
        });
    }

    /// Closes it: every delivery is 404 again.
    pub fn close(&self) {
        *lock(&self.open) = None;
    }

    pub fn is_open(&self) -> bool {
        lock(&self.open).is_some()
    }

    /// Whether `path` is the open door (the file server's router asks before reading a body).
    pub fn is_ours(&self, path: &str) -> bool {
        let Some(token) = path.strip_prefix("/hooks/frameio/") else {
            return false;
        };
        lock(&self.open)
            .as_ref()
            .is_some_and(|o| constant_eq(o.path_token.as_bytes(), token.as_bytes()))
    }

    /// Refuses a body over [`MAX_BODY`] before it is read.
    pub fn too_large(&self) -> Verdict {
        self.refusal("body too large");
        Verdict::TooLarge
    }

    /// Judges one delivery (its body read whole) and hands it on when it passes.
    pub fn deliver(
        &self,
        path: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Verdict {
        if !self.is_ours(path) {
            return Verdict::NotFound;
        }
        let (secrets, to) = match lock(&self.open).as_ref() {
            Some(o) => (o.secrets.clone(), o.to.clone()),
            None => return Verdict::NotFound,
        };
        if body.len() as u64 > MAX_BODY {
            return self.too_large();
        }
        let verdict = check(&secrets, timestamp, signature, body, now);
        if let Err(why) = verdict {
            self.refusal(why);
            return Verdict::Unauthorized(why);
        }
        let Some(delivery) = parse(body) else {
            self.refusal("signed, but not a Frame.io event");
            return Verdict::Unauthorized("not a Frame.io event");
        };
        let key = (
            delivery.kind.clone(),
            delivery.resource_id.clone(),
            timestamp.unwrap_or_default().to_string(),
        );
        let at = Instant::now();
        {
            let mut seen = lock(&self.seen);
            seen.forget_old(at);
            if seen.keys.contains_key(&key) {
                log::debug!(
                    "review: {} for {} delivered again; ignored",
                    delivery.kind,
                    delivery.resource_id
                );
                return Verdict::Repeat;
            }
            seen.keys.insert(key.clone(), at);
            seen.order.push_back((key.clone(), at));
        }
        match to.try_send(delivery) {
            Ok(()) => Verdict::Accepted,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                // Not taken: let Frame.io's retry bring it again.
                lock(&self.seen).keys.remove(&key);
                Verdict::Busy
            }
        }
    }

    fn refusal(&self, why: &str) {
        use std::sync::atomic::Ordering;
        let now = Instant::now();
        let mut warned = lock(&self.warned);
        if warned.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *warned = Some(now);
        let more = self.refused.swap(0, Ordering::Relaxed);
        let more = match more {
            0 => String::new(),
            n => format!(" ({n} more refused in the last minute)"),
        };
        log::warn!("review: a webhook delivery was refused: {why}{more}");
    }
}

/// Checks the timestamp and the signature (`Err` says why not).
pub fn check(
    secrets: &[String],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), &'static str> {
    let ts = timestamp.ok_or("no X-Frameio-Request-Timestamp")?;
    let secs: u64 = ts
        .trim()
        .parse()
        .map_err(|_| "a malformed X-Frameio-Request-Timestamp")?;
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now_secs.abs_diff(secs) > MAX_SKEW.as_secs() {
        return Err("its timestamp is more than 5 minutes off");
    }
    let sig = signature.ok_or("no X-Frameio-Signature")?;
    let hex = sig
        .trim()
        .strip_prefix("v0=")
        .ok_or("a signature not in the v0= form")?;
    let tag = from_hex(hex).ok_or("a signature not in hex")?;
    let mut message = Vec::with_capacity(body.len() + ts.len() + 4);
    message.extend_from_slice(b"v0:");
    message.extend_from_slice(ts.as_bytes());
    message.push(b':');
    message.extend_from_slice(body);
    let good = secrets.iter().any(|secret| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, &message, &tag).is_ok()
    });
    if good {
        Ok(())
    } else {
        Err("a bad signature")
    }
}

/// `v0=<hex>` for `body` at `timestamp` with `secret` (what Frame.io sends; for tests).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &message);
    format!("v0={}", data_encoding::HEXLOWER.encode(tag.as_ref()))
}

fn parse(body: &[u8]) -> Option<Delivery> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let s = |a: &str, b: &str| v.get(a)?.get(b)?.as_str().map(str::to_string);
    Some(Delivery {
        kind: v.get("type")?.as_str()?.to_string(),
        account_id: s("account", "id")?,
        resource_id: s("resource", "id")?,
        resource_type: s("resource", "type").unwrap_or_default(),
    })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares without stopping at the first difference (the path token is a secret too).
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"account":{"id":"acc"},"project":{"id":"p"},"resource":{"id":"f1","type":"file"},"type":"file.ready","user":{"id":"u"},"workspace":{"id":"w"}}"#;

    fn gate() -> (Gate, crossbeam_channel::Receiver<Delivery>) {
        let (tx, rx) = crossbeam_channel::bounded(8);
        let g = Gate::default();
        g.open("tok123", vec!["s3cret".into()], tx);
        (g, rx)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signed_fresh_delivery_passes_once_and_repeats_are_dropped() {
        let (g, rx) = gate();
        let sig = sign("s3cret", "1000", BODY);
        let v = g.deliver(
            "/hooks/frameio/tok123",
            Some("1000"),
            Some(&sig),
            BODY,
            at(1100),
        );
        assert_eq!(v, Verdict::Accepted);
        let d = rx.try_recv().unwrap();
        assert_eq!(
            (d.kind.as_str(), d.resource_id.as_str()),
            ("file.ready", "f1")
        );
        let again = g.deliver(
            "/hooks/frameio/tok123",
            Some("1000"),
            Some(&sig),
            BODY,
            at(1100),
        );
        assert_eq!(again, Verdict::Repeat);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn forged_stale_and_oversized_deliveries_are_refused() {
        let (g, rx) = gate();
        let forged = sign("other", "1000", BODY);
        let p = "/hooks/frameio/tok123";
        assert_eq!(
            g.deliver(p, Some("1000"), Some(&forged), BODY, at(1000))
                .status(),
            401
        );
        let stale = sign("s3cret", "1000", BODY);
        assert_eq!(
            g.deliver(p, Some("1000"), Some(&stale), BODY, at(1000 + 600))
                .status(),
            401
        );
        // The body changed under a good signature.
        let mut tampered = BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            g.deliver(p, Some("1000"), Some(&stale), &tampered, at(1000))
                .status(),
            401
        );
        let big = vec![b' '; (MAX_BODY + 1) as usize];
        let sig = sign("s3cret", "1000", &big);
        assert_eq!(
            g.deliver(p, Some("1000"), Some(&sig), &big, at(1000))
                .status(),
            413
        );
        assert_eq!(g.deliver(p, None, None, BODY, at(1000)).status(), 401);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn only_the_open_path_answers() {
        let (g, _rx) = gate();
        let sig = sign("s3cret", "1000", BODY);
        let v = g.deliver(
            "/hooks/frameio/other",
            Some("1000"),
            Some(&sig),
            BODY,
            at(1000),
        );
        assert_eq!(v, Verdict::NotFound);
        g.close();
        let v = g.deliver(
            "/hooks/frameio/tok123",
            Some("1000"),
            Some(&sig),
            BODY,
            at(1000),
        );
        assert_eq!(v, Verdict::NotFound);
    }
}
