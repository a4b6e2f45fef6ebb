//! What cloudflared's stderr lines mean to us. Pure functions, no I/O.
//!
//! cloudflared writes everything on stderr in zerolog's console format
//! (`2026-08-20T10:00:00Z INF <message> key=value …`); fatal errors are bare text without a
//! timestamp. We need a few facts from it: the quick-tunnel hostname (also served on
//! `/quicktunnel`, which older or stripped-down builds may not have), why it failed, and the
//! state of its edge connections as it changes. The last is what `/ready` says too, but only
//! when asked; stderr says it the moment it happens (measured on 2026.8.2: the loss lines
//! come at once, `/ready` follows within 20 ms, our next poll seconds later).
//!
//! The level is no guide: a clean shutdown logs `ERR Connection terminated` and `ERR no more
//! connections active and exiting`, so lines are told apart by their message.

use std::time::Duration;

/// A line that tells the supervisor something.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The quick tunnel's public URL, `https://<words>.trycloudflare.com`.
    QuickUrl(String),
    /// The quick-tunnel API refused to create a tunnel (HTTP 429); retrying soon won't help.
    RateLimited,
    /// Edge connection `connIndex` is registered: the tunnel carries traffic (again).
    Registered(u8),
    /// Edge connection `connIndex` went away; cloudflared's own words, shortened.
    Lost(u8, String),
    /// cloudflared tries connection `connIndex` again within this long.
    Retrying(u8, Duration),
    /// cloudflared begins its graceful shutdown: it was sent SIGTERM or SIGINT.
    ShuttingDown,
    /// Anything else.
    Other,
}

/// Messages that mean an edge connection is gone, as 2026.8.2 logs them (HTTP/2: `Lost
/// connection with the edge`, `Serve tunnel error`, `Connection terminated`; QUIC: `failed
/// to accept incoming stream requests`; a refused re-registration: `Register tunnel error
/// from server side`). Per-request errors (`Request failed`, `failed to serve incoming
/// request`) are not among them: they happen while the connection is fine.
const LOST: &[&str] = &[
    "Lost connection with the edge",
    "Connection terminated",
    "failed to accept incoming stream requests",
    "Serve tunnel error",
    "Register tunnel error from server side",
];

pub fn parse_line(line: &str) -> Line {
    if let Some(url) = find_quick_url(line) {
        return Line::QuickUrl(url);
    }
    if line.contains("QuickTunnel") && line.contains("429 Too Many Requests") {
        return Line::RateLimited;
    }
    let Some(message) = message_of(line) else {
        // Bare text: urfave/cli's last words before exiting, not a connection state.
        return Line::Other;
    };
    if message.starts_with("Initiating graceful shutdown") {
        return Line::ShuttingDown;
    }
    // Since 2023.4.1; before it, `Connection <uuid> registered connIndex=N …`.
    if message.starts_with("Registered tunnel connection")
        || (message.starts_with("Connection ") && message.contains(" registered"))
    {
        return Line::Registered(conn_index(line));
    }
    if let Some(wait) = message
        .strip_prefix("Retrying connection in up to ")
        .and_then(|rest| parse_go_duration(rest.split_whitespace().next()?))
    {
        return Line::Retrying(conn_index(line), wait);
    }
    if LOST.iter().any(|m| message.starts_with(m)) {
        return Line::Lost(conn_index(line), describe(message));
    }
    Line::Other
}

/// The part after `<time> <LVL> ` of a console line; None for bare text.
fn message_of(line: &str) -> Option<&str> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(time), Some(level), Some(rest))
            if time.ends_with('Z') && ["DBG", "INF", "WRN", "ERR", "FTL"].contains(&level) =>
        {
            Some(rest)
        }
        _ => None,
    }
}

/// `connIndex=N` from the fields; 0 when absent (a quick tunnel has only connection 0).
fn conn_index(line: &str) -> u8 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("connIndex=")?.parse().ok())
        .unwrap_or(0)
}

/// A message for people: the text and its `error`, without the routing fields.
fn describe(message: &str) -> String {
    let cut = [" connIndex=", " event=", " ip="]
        .iter()
        .filter_map(|f| message.find(f))
        .min()
        .unwrap_or(message.len());
    let text = message[..cut].trim();
    let text = match text.split_once(" error=") {
        Some((what, why)) => format!("{what}: {}", why.trim_matches('"')),
        None => text.to_string(),
    };
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// A Go `time.Duration` as cloudflared prints it: `1s`, `500ms`, `1m4s`, `1h0m0s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * seconds).ok()?;
    }
    Some(total)
}

const SUFFIX: &str = ".trycloudflare.com";

/// Finds `https://[a-z0-9-]+\.trycloudflare\.com` (what node-cloudflared matches, since the
/// box around it has changed over the years), not followed by more host or path characters,
/// and not the API host `api.trycloudflare.com` that appears in network errors.
pub fn find_quick_url(line: &str) -> Option<String> {
    let mut rest = line;
    while let Some(at) = rest.find("https://") {
        let after = &rest[at + "https://".len()..];
        let label_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            .count();
        let label = &after[..label_len];
        if label_len > 0 && label != "api" && after[label_len..].starts_with(SUFFIX) {
            let end = label_len + SUFFIX.len();
            let next = after.as_bytes().get(end).copied();
            let continues =
                next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/');
            if !continues {
                return Some(format!("https://{}", &after[..end]));
            }
        }
        rest = after;
    }
    None
}

/// The JSON of `/quicktunnel`: `{"hostname":"<sub>.trycloudflare.com"}` (empty for named
/// tunnels). Returns the URL with `https://` added, or None when there is no hostname yet.
pub fn parse_quicktunnel(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct QuickTunnel {
        hostname: String,
    }
    let q: QuickTunnel = serde_json::from_slice(body).ok()?;
    let host = q.hostname.trim();
    (!host.is_empty()).then(|| format!("https://{host}"))
}

/// True when `url` (`http(s)://host[:port][/…]`) names a host other people can reach: not
/// `localhost`, not a loopback or unspecified address.
pub fn is_public_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host == "localhost" || host.ends_with(".localhost") {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_in_the_quick_tunnel_box_is_found() {
        let line = "2026-08-20T10:00:00Z INF |  https://seasonal-example-words-here.trycloudflare.com                                     |";
        assert_eq!(
            parse_line(line),
            Line::QuickUrl("https://seasonal-example-words-here.trycloudflare.com".into())
        );
    }

    #[test]
    fn other_lines_that_mention_trycloudflare_are_not_a_url() {
        for line in [
            "2026-08-20T10:00:00Z INF Requesting new quick Tunnel on trycloudflare.com...",
            "failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host",
            "https://abc.trycloudflare.community",
            "https://abc.trycloudflare.com/path",
            "https://.trycloudflare.com",
            "https://ABC.trycloudflare.com",
            "http://abc.trycloudflare.com",
            "",
        ] {
            assert_eq!(find_quick_url(line), None, "{line}");
        }
    }

    #[test]
    fn the_url_may_end_the_line_or_sit_among_words() {
        assert_eq!(
            find_quick_url("https://a-1.trycloudflare.com").as_deref(),
            Some("https://a-1.trycloudflare.com")
        );
        assert_eq!(
            find_quick_url("see https://x.y https://b2.trycloudflare.com\" now").as_deref(),
            Some("https://b2.trycloudflare.com")
        );
    }

    #[test]
    fn the_rate_limit_refusal_is_recognised() {
        let line = "2026-08-20T10:00:00Z ERR Error unmarshaling QuickTunnel response: error code: 1015 error=\"invalid character 'e' looking for beginning of value\" status_code=\"429 Too Many Requests\"";
        assert_eq!(parse_line(line), Line::RateLimited);
        assert_eq!(
            parse_line(
                "2026-08-20T10:00:00Z INF Requesting new quick Tunnel on trycloudflare.com..."
            ),
            Line::Other
        );
    }

    /// The lines of each phase as cloudflared 2026.8.2 printed them (reference, "Measured on
    /// the real binary").
    #[test]
    fn the_edge_connection_state_is_read_from_the_measured_lines() {
        let t = "2026-12-01T10:00:00Z";
        assert_eq!(
            parse_line(&format!("{t} INF Registered tunnel connection connIndex=0 connection=7c1c2f31-3b3e-4b55-9d62-9f1a9c0e2b11 event=0 ip=198.41.200.63 location=lax01 protocol=quic")),
            Line::Registered(0)
        );
        assert_eq!(
            parse_line(&format!("{t} INF Connection 7c1c2f31-3b3e-4b55-9d62-9f1a9c0e2b11 registered connIndex=2 location=lax01")),
            Line::Registered(2)
        );
        // Lost over HTTP/2.
        assert_eq!(
            parse_line(&format!(
                "{t} INF Lost connection with the edge connIndex=0"
            )),
            Line::Lost(0, "Lost connection with the edge".into())
        );
        assert_eq!(
            parse_line(&format!("{t} WRN Serve tunnel error error=\"connection with edge closed\" connIndex=0 event=0 ip=198.41.200.63")),
            Line::Lost(0, "Serve tunnel error: connection with edge closed".into())
        );
        assert_eq!(
            parse_line(&format!(
                "{t} INF Retrying connection in up to 1s connIndex=0 event=0 ip=198.41.200.63"
            )),
            Line::Retrying(0, Duration::from_secs(1))
        );
        assert_eq!(
            parse_line(&format!(
                "{t} ERR Connection terminated error=\"connection with edge closed\" connIndex=0"
            )),
            Line::Lost(
                0,
                "Connection terminated: connection with edge closed".into()
            )
        );
        // Lost over QUIC: this one line only.
        assert_eq!(
            parse_line(&format!("{t} ERR failed to accept incoming stream requests error=\"failed to accept QUIC stream: Application error 0x0 (remote)\" connIndex=0 event=0 ip=198.41.200.63")),
            Line::Lost(0, "failed to accept incoming stream requests: failed to accept QUIC stream: Application error 0x0 (remote)".into())
        );
        assert!(matches!(
            parse_line(&format!("{t} ERR Register tunnel error from server side error=\"Unauthorized: Failed to get tunnel\" connIndex=1 event=0 ip=198.41.200.63")),
            Line::Lost(1, _)
        ));
        assert_eq!(
            parse_line(&format!(
                "{t} INF Initiating graceful shutdown due to signal terminated ..."
            )),
            Line::ShuttingDown
        );
        // Per-request errors and the clean shutdown's summary are not a lost connection.
        for other in [
            format!("{t} ERR failed to serve incoming request error=\"Error shutting down control stream: context canceled\""),
            format!("{t} ERR Request failed error=\"Incoming request ended abruptly: context canceled\" connIndex=0 dest=https://x.trycloudflare.com/f/1 event=0 ip=198.41.200.63 type=http"),
            format!("{t} ERR no more connections active and exiting"),
            format!("{t} INF Unregistered tunnel connection connIndex=0 event=0 ip=198.41.200.63"),
            "Connection terminated".to_string(),
        ] {
            assert_eq!(parse_line(&other), Line::Other, "{other}");
        }
    }

    #[test]
    fn go_durations_as_cloudflared_prints_them() {
        let s = Duration::from_secs;
        assert_eq!(parse_go_duration("1s"), Some(s(1)));
        assert_eq!(parse_go_duration("1m4s"), Some(s(64)));
        assert_eq!(parse_go_duration("1h0m0s"), Some(s(3600)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "s", "4", "2x", "1m-3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn quicktunnel_json_gives_the_https_url() {
        assert_eq!(
            parse_quicktunnel(br#"{"hostname":"quiet-river-moon.trycloudflare.com"}"#).as_deref(),
            Some("https://quiet-river-moon.trycloudflare.com")
        );
        assert_eq!(parse_quicktunnel(br#"{"hostname":""}"#), None);
        assert_eq!(parse_quicktunnel(b"404 page not found\n"), None);
    }

    #[test]
    fn loopback_and_unspecified_hosts_are_not_public() {
        for url in [
            "http://127.0.0.1:8081",
            "https://127.1.2.3",
            "http://0.0.0.0:80/x",
            "http://localhost",
            "https://LOCALHOST.:443",
            "http://app.localhost",
            "http://[::1]:8081",
            "http://[::]/",
            "http://user@127.0.0.1/",
            "ftp://example.com",
            "https://",
        ] {
            assert!(!is_public_url(url), "{url}");
        }
        for url in [
            "https://files.example.com",
            "https://quiet-river-moon.trycloudflare.com",
            "http://203.0.113.7:8080/base",
            "https://[2001:db8::1]/",
        ] {
            assert!(is_public_url(url), "{url}");
        }
    }
}
