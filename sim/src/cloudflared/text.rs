//! Formatting helpers that reproduce what cloudflared writes: zerolog console
//! lines, the `asciiBox` tables, Go durations, RFC 3339 timestamps, random ids.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// zerolog levels as the console writer abbreviates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub fn tag(self) -> &'static str {
        match self {
            Level::Debug => "DBG",
            Level::Info => "INF",
            Level::Warn => "WRN",
            Level::Error => "ERR",
            Level::Fatal => "FTL",
        }
    }

    /// `--loglevel` values accepted by cloudflared.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "debug" | "trace" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            "fatal" => Some(Level::Fatal),
            _ => None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds (UTC).
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// HTTP `Date` header value (IMF-fixdate).
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// Howard Hinnant's days -> civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a Go `time.ParseDuration` string (`30s`, `1m30s`, `500ms`, `1.5h`, `0`).
/// Negative durations are accepted by Go; they come back as zero here.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * scale;
    }
    if negative {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_secs_f64(total))
}

/// Formats like Go's `time.Duration.String()` (`30s`, `3m0s`, `1m4s`, `500ms`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (v, unit) = if nanos < 1_000 {
            (nanos as f64, "ns")
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "µs")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        return format!("{}{unit}", trim_float(v));
    }
    let total_secs = d.as_secs();
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = (total_secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let s = trim_float(s);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// `cliutil.asciiBox`: `+` + dashes + `+`, rows `|` + pad + text + fill + pad + `|`.
pub fn ascii_box(lines: &[String], padding: usize) -> Vec<String> {
    let max = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let border = format!("+{}+", "-".repeat(max + padding * 2));
    let spacer = " ".repeat(padding);
    let mut out = vec![border.clone()];
    for line in lines {
        let fill = " ".repeat(max - line.chars().count());
        out.push(format!("|{spacer}{line}{fill}{spacer}|"));
    }
    out.push(border);
    out
}

/// The quick-tunnel box: exactly four lines.
pub fn quick_tunnel_box(hostname: &str) -> Vec<String> {
    ascii_box(
        &[
            "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
                .to_string(),
            format!("https://{hostname}"),
        ],
        2,
    )
}

/// One row of the pre-check table (component, target, status, details).
pub struct PrecheckRow {
    pub component: &'static str,
    pub target: &'static str,
    pub pass: bool,
    pub details: &'static str,
}

/// The 2026.5+ "CONNECTIVITY PRE-CHECKS" table, laid out like a real 2026.7.3
/// capture: a centred title between borders, a column header, the rows, an
/// empty row, the summary, a border.
pub fn precheck_table(rows: &[PrecheckRow], summary: &str) -> Vec<String> {
    let fmt_row = |a: &str, b: &str, c: &str, d: &str| format!("{a:<18}{b:<27}{c:<8}{d}");
    let mut body = vec![fmt_row("COMPONENT", "TARGET", "STATUS", "DETAILS")];
    for r in rows {
        body.push(fmt_row(
            r.component,
            r.target,
            if r.pass { "PASS" } else { "FAIL" },
            r.details,
        ));
    }
    body.push(String::new());
    body.push(format!("SUMMARY: {summary}"));
    let boxed = ascii_box(&body, 2);
    let inner = boxed[0].chars().count() - 2;
    let title = "CONNECTIVITY PRE-CHECKS";
    let left = (inner - title.len()) / 2;
    let right = inner - title.len() - left;
    let mut out = vec![
        boxed[0].clone(),
        format!("|{}{title}{}|", " ".repeat(left), " ".repeat(right)),
    ];
    out.extend(boxed);
    out
}

/// zerolog quotes a value when it has control characters, spaces, `\` or `"`.
pub fn needs_quote(s: &str) -> bool {
    s.is_empty()
        || s.bytes()
            .any(|b| !(0x20..=0x7e).contains(&b) || b == b' ' || b == b'\\' || b == b'"')
}

/// Go `strconv.Quote`, close enough for log values.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One console line: `<time> <LVL> <message> error=… k=v…` (fields sorted,
/// `error` first, values quoted when needed). No trailing newline.
pub fn format_line(unix_secs: u64, level: Level, msg: &str, fields: &[(&str, String)]) -> String {
    let mut line = format!("{} {} {}", rfc3339_utc(unix_secs), level.tag(), msg);
    let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
    sorted.sort_by(|a, b| match (a.0 == "error", b.0 == "error") {
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.0.cmp(b.0),
    });
    for (k, v) in sorted {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        if needs_quote(v) {
            line.push_str(&go_quote(v));
        } else {
            line.push_str(v);
        }
    }
    line
}

/// Writes a whole line to stderr in one call. Like a Go program, a broken
/// stderr pipe kills the process with SIGPIPE.
pub fn write_stderr_line(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let stderr = std::io::stderr();
    let mut lock = stderr.lock();
    if let Err(e) = lock.write_all(&buf) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            super::signals::die_of_sigpipe();
        }
    }
}

/// `--logfile` (or `TUNNEL_LOGFILE`): every line also goes there, as the raw zerolog JSON the
/// real file writer gets (reference §1).
static LOG_FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens (appends to) the `--logfile`; an error is what cloudflared would report.
pub fn set_log_file(path: &str) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = LOG_FILE.set(Mutex::new(f));
    Ok(())
}

/// One zerolog JSON line: `{"level":"info","time":"…","message":"…","k":"v"}`.
pub fn json_line(unix_secs: u64, level: Level, msg: &str, fields: &[(&str, String)]) -> String {
    let name = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Fatal => "fatal",
    };
    let mut line = format!(
        "{{\"level\":\"{name}\",\"time\":\"{}\"",
        rfc3339_utc(unix_secs)
    );
    for (k, v) in fields {
        line.push_str(&format!(",{}:{}", super::json_str(k), super::json_str(v)));
    }
    line.push_str(&format!(",\"message\":{}}}", super::json_str(msg)));
    line
}

/// Console logger with a minimum level.
#[derive(Clone, Copy, Debug)]
pub struct Logger {
    pub min: Level,
}

impl Logger {
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, String)]) {
        if level < self.min {
            return;
        }
        let now = now_unix();
        write_stderr_line(&format_line(now, level, msg, fields));
        if let Some(file) = LOG_FILE.get() {
            if let Ok(mut f) = file.lock() {
                let _ = writeln!(f, "{}", json_line(now, level, msg, fields));
            }
        }
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg, &[]);
    }
    pub fn infof(&self, msg: &str, fields: &[(&str, String)]) {
        self.log(Level::Info, msg, fields);
    }
}

/// Small non-cryptographic generator (splitmix64), seeded from std's random
/// hasher keys, the clock and the pid.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u64(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        Rng(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A duration drawn uniformly from `[low, high]`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.next_u64() % (span + 1))
    }

    /// Lower-case hyphenated version-4 UUID.
    pub fn uuid_v4(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// `<word>-<word>-<word>[-<word>].trycloudflare.com`.
    pub fn quick_hostname(&mut self) -> String {
        let n = 3 + self.below(2);
        let words: Vec<&str> = (0..n).map(|_| WORDS[self.below(WORDS.len())]).collect();
        format!("{}.trycloudflare.com", words.join("-"))
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

const WORDS: &[&str] = &[
    "quiet",
    "river",
    "moon",
    "seasonal",
    "example",
    "words",
    "here",
    "flyer",
    "only",
    "gaming",
    "cpu",
    "amber",
    "basin",
    "cedar",
    "delta",
    "ember",
    "fabric",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kernel",
    "lantern",
    "meadow",
    "nickel",
    "orbit",
    "pepper",
    "quartz",
    "ribbon",
    "saddle",
    "timber",
    "umbrella",
    "velvet",
    "walnut",
    "yellow",
    "zodiac",
    "acoustic",
    "bicycle",
    "canyon",
    "donor",
    "eligible",
    "festival",
    "glossary",
    "holiday",
    "indoor",
    "journal",
    "keyboard",
    "latin",
    "marathon",
    "notebook",
    "olympic",
    "planet",
    "quotes",
    "rental",
    "starring",
    "tribune",
    "understand",
    "vacation",
    "warrior",
    "xerox",
    "yields",
    "zoning",
    "album",
    "bargain",
    "charter",
    "dispatch",
    "exposure",
    "fitness",
    "granted",
    "highland",
    "insured",
    "jewelry",
    "kitchen",
    "ladder",
    "monitor",
    "network",
    "outlet",
    "printer",
    "quality",
    "referral",
    "sponsor",
    "trainer",
    "uniform",
    "vertex",
    "weekly",
    "cargo",
    "diesel",
    "encoding",
    "forecast",
    "genome",
    "hospital",
    "integer",
    "jackson",
    "kinase",
    "lighting",
    "mailman",
    "nursing",
    "oracle",
    "pixel",
    "remix",
    "silicon",
    "tablet",
    "vintage",
    "widget",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_787_220_000), "2026-08-20T10:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("30"), None);
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(format_go_duration(Duration::from_secs(180)), "3m0s");
        assert_eq!(format_go_duration(Duration::from_secs(64)), "1m4s");
        assert_eq!(format_go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn box_matches_reference_widths() {
        let b = quick_tunnel_box("seasonal-example-words-here.trycloudflare.com");
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], format!("+{}+", "-".repeat(92)));
        assert_eq!(b[3], b[0]);
        assert_eq!(
            b[1],
            "|  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |"
        );
        assert_eq!(
            b[2],
            "|  https://seasonal-example-words-here.trycloudflare.com                                     |"
        );
    }

    #[test]
    fn precheck_table_matches_capture() {
        let rows = [PrecheckRow {
            component: "DNS Resolution",
            target: "region1.v2.argotunnel.com",
            pass: true,
            details: "DNS Resolved successfully",
        }];
        let t = precheck_table(
            &rows,
            "Environment is healthy. cloudflared will use 'quic' as primary protocol.",
        );
        assert_eq!(t[0], format!("+{}+", "-".repeat(85)));
        assert_eq!(
            t[1],
            "|                               CONNECTIVITY PRE-CHECKS                               |"
        );
        assert_eq!(
            t[3],
            "|  COMPONENT         TARGET                     STATUS  DETAILS                       |"
        );
        assert_eq!(
            t[4],
            "|  DNS Resolution    region1.v2.argotunnel.com  PASS    DNS Resolved successfully     |"
        );
        assert!(t.iter().all(|l| l.chars().count() == 87));
    }

    #[test]
    fn line_format_sorts_fields_error_first() {
        let l = format_line(
            0,
            Level::Error,
            "Failed to dial a quic connection",
            &[
                ("ip", "198.41.200.63".into()),
                ("connIndex", "0".into()),
                ("event", "0".into()),
                ("error", "timeout: no recent network activity".into()),
            ],
        );
        assert_eq!(
            l,
            "1970-01-01T00:00:00Z ERR Failed to dial a quic connection error=\"timeout: no recent network activity\" connIndex=0 event=0 ip=198.41.200.63"
        );
        let empty = format_line(0, Level::Error, "", &[("error", "x y".into())]);
        assert_eq!(empty, "1970-01-01T00:00:00Z ERR  error=\"x y\"");
    }

    #[test]
    fn ids_have_the_right_shape() {
        let mut r = Rng::new();
        let u = r.uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let h = r.quick_hostname();
        let sub = h.strip_suffix(".trycloudflare.com").unwrap();
        let n = sub.split('-').count();
        assert!((3..=4).contains(&n), "{h}");
        assert!(sub.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
    }
}
