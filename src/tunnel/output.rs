//! What cloudflared's stderr lines mean to us. Pure functions, no I/O.
//!
//! cloudflared writes everything on stderr in zerolog's console format
//! (`2026-08-20T10:00:00Z INF <message> key=value …`); fatal errors are bare text without a
//! timestamp. We only need a few facts from it: the quick-tunnel hostname (also served on
//! `/quicktunnel`, which older or stripped-down builds may not have), and why it failed.

/// A line that tells the supervisor something.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The quick tunnel's public URL, `https://<words>.trycloudflare.com`.
    QuickUrl(String),
    /// The quick-tunnel API refused to create a tunnel (HTTP 429); retrying soon won't help.
    RateLimited,
    /// Anything else.
    Other,
}

pub fn parse_line(line: &str) -> Line {
    if let Some(url) = find_quick_url(line) {
        return Line::QuickUrl(url);
    }
    if line.contains("QuickTunnel") && line.contains("429 Too Many Requests") {
        return Line::RateLimited;
    }
    Line::Other
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
            parse_line("2026-08-20T10:00:00Z INF Registered tunnel connection connIndex=0"),
            Line::Other
        );
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
