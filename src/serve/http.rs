//! The part of HTTP/1.1 (RFC 9112) this listener needs, as pure functions: parse one request
//! head, route its target, percent-decode, and write response heads.
//!
//! Strict on purpose: anything outside the subset below is a 400 and the connection closes.
//! Request bodies are never read (GET and HEAD have none); a request announcing one is
//! answered and the connection closed, so no byte of a body is ever taken for a request.

/// Longest request head accepted (request line + headers). Range requests from Frame.io and
/// cloudflared are a few hundred bytes.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// `HTTP/1.0` (no keep-alive here) or `HTTP/1.1`.
    pub http11: bool,
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> RequestHead<'a> {
    /// The only value of a header that must appear at most once; `Err` if it is repeated.
    pub fn single(&self, name: &str) -> Result<Option<&'a str>, ()> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = values.next().map(|(_, v)| *v);
        match values.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }

    /// Whether the connection may serve another request after this one.
    pub fn keep_alive(&self) -> bool {
        let close = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        let has_body = self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding")
                || (n.eq_ignore_ascii_case("content-length") && v.trim() != "0")
        });
        self.http11 && !close && !has_body
    }
}

/// Where the end of the head is in `buf` (the index just past `\r\n\r\n`), if it is there.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head (including the final empty line). `None` = 400.
pub(crate) fn parse_head(head: &[u8]) -> Option<RequestHead<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if request_line.next().is_some() || method.is_empty() || !method.bytes().all(is_tchar) {
        return None;
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut headers = Vec::new();
    for line in lines {
        // No whitespace before the colon, no obs-fold (RFC 9112 §5.1, §5.2).
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return None;
        }
        headers.push((name, value.trim_matches([' ', '\t'])));
    }
    Some(RequestHead {
        method,
        target,
        http11,
        headers,
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `/f/<token>/<name>` into the token and the percent-decoded name. Anything else,
/// including a query, an empty or extra segment, or a bad escape, is `None` (404).
pub(crate) fn route(target: &str) -> Option<(&str, Vec<u8>)> {
    let rest = target.strip_prefix("/f/")?;
    let (token, name) = rest.split_once('/')?;
    if name.is_empty() || name.contains(['/', '?', '#']) {
        return None;
    }
    Some((token, percent_decode(name)?))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes every byte that is not RFC 3986 "unreserved", so any file name makes a
/// path segment that survives proxies unchanged.
pub(crate) fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The status line of each status this server sends (anything else reads as 500).
pub(crate) fn status_line(code: u16) -> &'static str {
    match code {
        200 => "HTTP/1.1 200 OK\r\n",
        206 => "HTTP/1.1 206 Partial Content\r\n",
        400 => "HTTP/1.1 400 Bad Request\r\n",
        404 => "HTTP/1.1 404 Not Found\r\n",
        408 => "HTTP/1.1 408 Request Timeout\r\n",
        410 => "HTTP/1.1 410 Gone\r\n",
        416 => "HTTP/1.1 416 Range Not Satisfiable\r\n",
        431 => "HTTP/1.1 431 Request Header Fields Too Large\r\n",
        503 => "HTTP/1.1 503 Service Unavailable\r\n",
        _ => "HTTP/1.1 500 Internal Server Error\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cloudflared_request() {
        let raw = b"GET /f/abc/a%20b.mov HTTP/1.1\r\nHost: x.trycloudflare.com\r\nRange:  bytes=0-9 \r\nConnection: keep-alive\r\n\r\n";
        let head = parse_head(raw).unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/f/abc/a%20b.mov");
        assert!(head.http11);
        assert_eq!(head.single("range"), Ok(Some("bytes=0-9")));
        assert!(head.keep_alive());
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nGET"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn rejects_malformed_heads() {
        for bad in [
            &b"GET /  HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\n\n",
        ] {
            assert_eq!(parse_head(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn connection_close_http10_and_bodies_end_keep_alive() {
        let close = parse_head(b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").unwrap();
        assert!(!close.keep_alive());
        assert!(!parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
        let body = parse_head(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(!body.keep_alive());
        let chunked = parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(!chunked.keep_alive());
    }

    #[test]
    fn repeated_header_is_reported() {
        let head = parse_head(b"GET / HTTP/1.1\r\nRange: a\r\nrange: b\r\n\r\n").unwrap();
        assert_eq!(head.single("Range"), Err(()));
    }

    #[test]
    fn routes_only_file_links() {
        assert_eq!(route("/f/t/a%20b.mov"), Some(("t", b"a b.mov".to_vec())));
        assert_eq!(route("/f/t/%2e%2e"), Some(("t", b"..".to_vec())));
        for bad in [
            "/",
            "/f/",
            "/f/t",
            "/f/t/",
            "/f/t/a/b",
            "/f/t/a?x=1",
            "/f/t/a#x",
            "/f/t/%zz",
            "/f/t/%4",
            "/g/t/a",
            "//f/t/a",
            "http://h/f/t/a",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(percent_encode("A_1-2.mov".as_bytes()), "A_1-2.mov");
        assert_eq!(
            percent_encode("a b/é%.mov".as_bytes()),
            "a%20b%2F%C3%A9%25.mov"
        );
        let name = "x y+z (final) ü.mov";
        assert_eq!(
            percent_decode(&percent_encode(name.as_bytes())).unwrap(),
            name.as_bytes()
        );
    }
}
