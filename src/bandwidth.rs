//! `upload.bandwidth`: one limit for every outgoing file byte (the part PUTs of every job and
//! the bytes written on `/f/` links), as a timetable in rclone's `--bwlimit` form, with a live
//! override from the dashboard.
//!
//! - [`parse`] reads the setting (a pure function): `off`, a rate (`20M` = 20 MiB/s, `512k`,
//!   plain bytes/s), or entries `HH:MM,RATE` / `Mon-HH:MM,RATE` separated by spaces. An entry
//!   without a day holds every day. The limit at a moment is the latest entry at or before it
//!   in the week (wrapping to the week's last entry), in local time.
//! - [`Bandwidth`] is the one token bucket the senders share: a sender asks for up to a step
//!   of bytes and gets a grant of at most a small quantum (20 ms worth), so the rate is smooth
//!   and a change of limit reaches transfers already running within a fraction of a second
//!   (waiters look again at least every 100 ms). With no limit it answers at once, with one
//!   atomic load.
//! - A clock thread looks at the timetable twice a second; the override (`POST
//!   /api/bandwidth`) holds until it is cleared (null) or postflow restarts: a restart goes
//!   back to the timetable in `config.json`, the one written-down decision.
//!
//! Waiting for the bucket never counts against a transfer's stall period: the part reader
//! blocks between socket writes (the per-write send timeout runs only inside a write), and
//! the file server starts a new step deadline after each wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A limit: `None` is no limit ("off"), `Some(n)` is n bytes per second.
pub type Limit = Option<u64>;

/// Minutes in a week; entries are placed on a week starting Monday 00:00.
const WEEK: u32 = 7 * 1440;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A parsed `upload.bandwidth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timetable {
    /// As written (for `/api/bandwidth`).
    pub text: String,
    /// (minute of the week, limit), sorted by minute, no two at the same minute. Never empty.
    slots: Vec<(u32, Limit)>,
}

/// Reads a rate: `off`, or a number with an optional binary suffix `B`, `K`, `M`, `G`, `T`
/// (rclone's: `20M` is 20 MiB/s, a bare number is KiB/s in rclone, but bytes/s here as
/// DESIGN says). Fractions are allowed (`1.5M`). Zero is refused: it would stop every
/// transfer (use a timetable's `off` hours, or pause the queue).
pub fn parse_rate(s: &str) -> Result<Limit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if t.contains(':') {
        return Err(format!(
            "{t:?}: separate upload and download rates are not supported (only uploads are limited)"
        ));
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{t:?}: unknown unit {c:?} (B, K, M, G or T)")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let value: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && !num.is_empty())
        .ok_or_else(|| format!("{t:?} is not a rate (e.g. \"20M\", \"512k\", \"off\")"))?;
    let bps = (value * mult as f64).round();
    if bps < 1.0 {
        return Err(format!(
            "{t:?} is zero: a limit must let bytes through (\"off\" means no limit)"
        ));
    }
    Ok(Some(bps.min(u64::MAX as f64) as u64))
}

/// Reads `upload.bandwidth`. The error names the bad entry.
pub fn parse(text: &str) -> Result<Timetable, String> {
    let entries: Vec<&str> = text.split_whitespace().collect();
    if entries.is_empty() {
        return Err("empty (\"off\", a rate such as \"20M\", or a timetable)".into());
    }
    if entries.len() == 1 && !entries[0].contains(',') {
        let limit = parse_rate(entries[0])?;
        return Ok(Timetable {
            text: text.trim().to_string(),
            slots: vec![(0, limit)],
        });
    }
    let mut slots: Vec<(u32, Limit)> = Vec::new();
    for entry in &entries {
        let bad = |why: String| format!("entry {entry:?}: {why}");
        let (when, rate) = entry
            .split_once(',')
            .ok_or_else(|| bad("expected HH:MM,RATE or Mon-HH:MM,RATE".into()))?;
        let limit = parse_rate(rate).map_err(bad)?;
        let (day, hhmm) = match when.split_once('-') {
            Some((d, rest)) => {
                let day = DAYS
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(d))
                    .ok_or_else(|| bad(format!("{d:?} is not a day (Mon, Tue, … Sun)")))?;
                (Some(day as u32), rest)
            }
            None => (None, when),
        };
        let minute = parse_hhmm(hhmm).ok_or_else(|| bad(format!("{hhmm:?} is not HH:MM")))?;
        let days: Vec<u32> = match day {
            Some(d) => vec![d],
            None => (0..7).collect(),
        };
        for d in days {
            let at = d * 1440 + minute;
            if slots.iter().any(|&(m, _)| m == at) {
                return Err(bad("a second entry for the same time".into()));
            }
            slots.push((at, limit));
        }
    }
    slots.sort_by_key(|&(m, _)| m);
    Ok(Timetable {
        text: text.trim().to_string(),
        slots,
    })
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Timetable {
    /// No limit, ever.
    pub fn off() -> Timetable {
        Timetable {
            text: "off".into(),
            slots: vec![(0, None)],
        }
    }

    /// The limit at `minute` of the week (0 = Monday 00:00), and how many minutes later it
    /// next changes (`None`: never).
    pub fn at(&self, minute: u32) -> (Limit, Option<u32>) {
        let minute = minute % WEEK;
        let i = self
            .slots
            .iter()
            .rposition(|&(m, _)| m <= minute)
            .unwrap_or(self.slots.len() - 1);
        let limit = self.slots[i].1;
        let n = self.slots.len();
        for k in 1..=n {
            let (m, l) = self.slots[(i + k) % n];
            if l != limit {
                let ahead = (m + WEEK - minute) % WEEK;
                return (limit, Some(if ahead == 0 { WEEK } else { ahead }));
            }
        }
        (limit, None)
    }
}

/// Where the limit in force comes from (DESIGN `GET /api/bandwidth`'s `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Timetable,
    Override,
}

/// What `/api/bandwidth`, `/api/status` and `/metrics` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub limit: Limit,
    /// "timetable", "override" or "off" (no limit from the timetable).
    pub source: &'static str,
    pub timetable: String,
    /// When the timetable next changes the limit (none while an override holds).
    pub next_change: Option<jiff::Timestamp>,
}

impl Snapshot {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "limit_bps": self.limit,
            "source": self.source,
            "timetable": self.timetable,
            "next_change": self.next_change.map(|t| t.to_string()),
            // The zone the timetable's times are read in.
            "time_zone": jiff::tz::TimeZone::system().iana_name().unwrap_or("local"),
        })
    }
}

struct Control {
    timetable: Timetable,
    overridden: Option<Limit>,
    next_change: Option<jiff::Timestamp>,
    clock_started: bool,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The shared token bucket and what sets its rate.
pub struct Bandwidth {
    /// Bytes per second now; 0 = no limit.
    rate: AtomicU64,
    control: Mutex<Control>,
    bucket: Mutex<Bucket>,
    changed: Condvar,
}

/// The longest a waiter sleeps before it looks at the rate again.
const RECHECK: Duration = Duration::from_millis(100);

impl Default for Bandwidth {
    fn default() -> Bandwidth {
        Bandwidth::new()
    }
}

impl Bandwidth {
    pub fn new() -> Bandwidth {
        Bandwidth {
            rate: AtomicU64::new(0),
            control: Mutex::new(Control {
                timetable: Timetable::off(),
                overridden: None,
                next_change: None,
                clock_started: false,
            }),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            changed: Condvar::new(),
        }
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes per second now (None: no limit).
    pub fn limit(&self) -> Limit {
        match self.rate.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }

    fn set_rate(&self, limit: Limit) {
        let old = self.rate.swap(limit.unwrap_or(0), Ordering::SeqCst);
        if old != limit.unwrap_or(0) {
            match limit {
                Some(n) => log::info!("bandwidth limit now {}/s", crate::human::size(n)),
                None => log::info!("bandwidth limit now off"),
            }
            self.changed.notify_all();
        }
    }

    /// Installs the timetable (at start) and, when it ever changes the limit, starts the
    /// clock thread that follows it.
    pub fn configure(&'static self, timetable: Timetable) {
        let needs_clock = timetable.slots.len() > 1;
        let start = {
            let mut c = self.control();
            c.timetable = timetable;
            let start = needs_clock && !c.clock_started;
            c.clock_started |= start;
            start
        };
        self.tick();
        if start {
            let spawned =
                std::thread::Builder::new()
                    .name("bandwidth".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_millis(500));
                        self.tick();
                    });
            if let Err(e) = spawned {
                log::warn!("bandwidth: cannot start the timetable's clock: {e}");
            }
        }
    }

    /// Follows the timetable (unless an override holds).
    fn tick(&self) {
        let now = jiff::Zoned::now();
        let minute = u32::from(now.weekday().to_monday_zero_offset() as u8) * 1440
            + now.hour() as u32 * 60
            + now.minute() as u32;
        let mut c = self.control();
        let (limit, ahead) = c.timetable.at(minute);
        let next = ahead.and_then(|a| {
            let start_of_minute = now
                .with()
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .ok()?
                .timestamp();
            start_of_minute
                .checked_add(jiff::SignedDuration::from_secs(i64::from(a) * 60))
                .ok()
        });
        c.next_change = next;
        let limit = c.overridden.unwrap_or(limit);
        drop(c);
        self.set_rate(limit);
    }

    /// A live override (`Some`), or back to the timetable (`None`).
    pub fn set_override(&self, limit: Option<Limit>) {
        self.control().overridden = limit;
        self.tick();
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = self.control();
        let limit = self.limit();
        let source = if c.overridden.is_some() {
            "override"
        } else if limit.is_none() {
            "off"
        } else {
            "timetable"
        };
        Snapshot {
            limit,
            source,
            timetable: c.timetable.text.clone(),
            next_change: if c.overridden.is_some() {
                None
            } else {
                c.next_change
            },
        }
    }

    /// Asks to send up to `want` bytes; blocks until some may go and answers how many (at
    /// least 1, at most `want`) and whether it had to wait. With no limit: `want`, at once.
    /// Bytes granted but not sent go back with [`Bandwidth::give_back`].
    pub fn take(&self, want: usize) -> (usize, bool) {
        if want == 0 {
            return (0, false);
        }
        if self.rate.load(Ordering::SeqCst) == 0 {
            return (want, false);
        }
        let mut waited = false;
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let rate = self.rate.load(Ordering::SeqCst);
            let now = Instant::now();
            if rate == 0 {
                bucket.tokens = 0.0;
                bucket.last = now;
                return (want, waited);
            }
            let rate_f = rate as f64;
            let burst = burst(rate) as f64;
            let elapsed = now.duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate_f).min(burst);
            bucket.last = now;
            if bucket.tokens > 0.0 {
                let grant = want.min(quantum(rate));
                bucket.tokens -= grant as f64;
                return (grant, waited);
            }
            waited = true;
            let wait = Duration::from_secs_f64((-bucket.tokens + 1.0) / rate_f)
                .clamp(Duration::from_millis(1), RECHECK);
            bucket = self
                .changed
                .wait_timeout(bucket, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Returns bytes granted by [`Bandwidth::take`] that were not sent.
    pub fn give_back(&self, bytes: usize) {
        if bytes == 0 || self.rate.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let burst = burst(self.rate.load(Ordering::SeqCst)) as f64;
        bucket.tokens = (bucket.tokens + bytes as f64).min(burst);
    }
}

/// The most a sender gets at once: 20 ms worth, between 4 KiB and 64 KiB.
fn quantum(rate: u64) -> usize {
    (rate / 50).clamp(4 << 10, 64 << 10) as usize
}

/// What the bucket holds when idle: 50 ms worth, at least a quantum.
fn burst(rate: u64) -> u64 {
    (rate / 20).max(quantum(rate) as u64)
}

/// The process's one bucket: every part PUT and every `/f/` body goes through it.
pub fn shared() -> &'static Bandwidth {
    static SHARED: OnceLock<Bandwidth> = OnceLock::new();
    SHARED.get_or_init(Bandwidth::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rates_read_as_rclone_writes_them() {
        assert_eq!(parse_rate("off"), Ok(None));
        assert_eq!(parse_rate("OFF"), Ok(None));
        assert_eq!(parse_rate("20M"), Ok(Some(20 * MIB)));
        assert_eq!(parse_rate("512k"), Ok(Some(512 * 1024)));
        assert_eq!(parse_rate("1.5M"), Ok(Some(3 * MIB / 2)));
        assert_eq!(parse_rate("1G"), Ok(Some(1 << 30)));
        assert_eq!(parse_rate("100000"), Ok(Some(100_000)));
        assert_eq!(parse_rate("100b"), Ok(Some(100)));
        for bad in ["", "M", "fast", "10Q", "-1M", "0", "0M", "10M:1M", "nan"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_rate("10M:1M").unwrap_err().contains("download"));
    }

    #[test]
    fn a_single_rate_holds_all_week() {
        let t = parse("4M").unwrap();
        assert_eq!(t.at(0), (Some(4 * MIB), None));
        assert_eq!(t.at(WEEK - 1), (Some(4 * MIB), None));
        assert_eq!(parse("off").unwrap().at(123), (None, None));
    }

    #[test]
    fn a_daily_timetable_changes_at_its_minutes_and_wraps_overnight() {
        let t = parse("08:00,20M 19:00,off").unwrap();
        // Monday 07:59 is still Sunday 19:00's "off"; the next change a minute later.
        assert_eq!(t.at(7 * 60 + 59), (None, Some(1)));
        assert_eq!(t.at(8 * 60), (Some(20 * MIB), Some(11 * 60)));
        assert_eq!(t.at(18 * 60 + 59), (Some(20 * MIB), Some(1)));
        assert_eq!(t.at(19 * 60), (None, Some(13 * 60)));
        // Tuesday the same.
        assert_eq!(t.at(1440 + 12 * 60), (Some(20 * MIB), Some(7 * 60)));
    }

    #[test]
    fn a_weekly_timetable_holds_from_its_day_to_the_next_entry() {
        let t = parse("Mon-08:00,512k Sat-00:00,off").unwrap();
        // Sunday evening: Saturday's off, until Monday 08:00.
        assert_eq!(t.at(6 * 1440 + 20 * 60), (None, Some(4 * 60 + 8 * 60)));
        // Wednesday noon: Monday's 512k, until Saturday 00:00.
        let wed_noon = 2 * 1440 + 12 * 60;
        assert_eq!(
            t.at(wed_noon),
            (Some(512 * 1024), Some(5 * 1440 - wed_noon))
        );
        // Monday before 08:00 wraps back to Saturday.
        assert_eq!(t.at(60), (None, Some(7 * 60)));
    }

    #[test]
    fn equal_neighbours_are_not_a_change() {
        let t = parse("08:00,4M 12:00,4M 19:00,off").unwrap();
        assert_eq!(t.at(9 * 60), (Some(4 * MIB), Some(10 * 60)));
    }

    #[test]
    fn errors_name_the_bad_entry() {
        let e = parse("08:00,20M 25:00,off").unwrap_err();
        assert!(e.contains("\"25:00,off\"") && e.contains("HH:MM"), "{e}");
        let e = parse("08:00,20M 19:00").unwrap_err();
        assert!(e.contains("\"19:00\""), "{e}");
        let e = parse("Mun-08:00,1M Sat-00:00,off").unwrap_err();
        assert!(
            e.contains("\"Mun-08:00,1M\"") && e.contains("not a day"),
            "{e}"
        );
        let e = parse("08:00,20M 08:00,off").unwrap_err();
        assert!(e.contains("same time"), "{e}");
        let e = parse("08:00,fast").unwrap_err();
        assert!(
            e.contains("\"08:00,fast\"") && e.contains("not a rate"),
            "{e}"
        );
        assert!(parse("   ").is_err());
        assert!(parse("8:00,1M 19:00,off").is_ok());
        assert!(parse("08:0,1M").is_err());
    }

    #[test]
    fn no_limit_grants_everything_at_once() {
        let b = Bandwidth::new();
        assert_eq!(b.take(1 << 20), (1 << 20, false));
    }

    #[test]
    fn a_limit_grants_small_quanta_and_an_override_lifts_it() {
        let b = Bandwidth::new();
        b.set_override(Some(Some(MIB)));
        assert_eq!(b.limit(), Some(MIB));
        let (first, _) = b.take(1 << 20);
        assert_eq!(first, quantum(MIB));
        // Spend what the bucket holds: the next grant waits.
        let mut waited = false;
        for _ in 0..10 {
            waited |= b.take(1 << 20).1;
        }
        assert!(waited);
        assert_eq!(b.snapshot().source, "override");
        b.set_override(Some(None));
        assert_eq!(b.take(1 << 20), (1 << 20, false));
        b.set_override(None);
        assert_eq!(b.snapshot().source, "off");
        assert_eq!(b.snapshot().next_change, None);
    }

    #[test]
    fn a_waiter_sees_the_limit_lifted() {
        let b: &'static Bandwidth = Box::leak(Box::new(Bandwidth::new()));
        // 4 KiB/s: after the first quantum each grant would take a second.
        b.set_override(Some(Some(4096)));
        b.take(4096);
        b.take(4096);
        let waiter = std::thread::spawn(move || b.take(1 << 20));
        std::thread::sleep(Duration::from_millis(50));
        b.set_override(Some(None));
        let (got, _) = waiter.join().unwrap();
        assert!(got == 1 << 20 || got == 4096, "{got}");
    }
}
