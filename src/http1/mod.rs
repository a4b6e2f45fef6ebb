//! The HTTP/1.1 front both listeners share (the public file server in `serve`, the dashboard
//! in `dashboard`): reading and checking request heads, a bounded pool of workers, and
//! writes bounded by progress. Each listener keeps its own routes, limits and error pages
//! (a [`Handler`] and its [`Limits`]).
//!
//! # Why not tiny_http
//!
//! The design card named tiny_http. Version 0.12 cannot bound what a client holds:
//!
//! - It sets no socket timeouts, and a connection takes a thread from a pool that grows
//!   without limit before a byte of the request is read. A client that sends nothing, or one
//!   header byte a minute, keeps a thread blocked in `read` forever; one that stops reading
//!   does the same in `write`. `serve.max_connections` could not be enforced.
//! - Its accept thread exits on the first `accept` error (EMFILE under load), silently.
//! - Its `upgrade` hands back a boxed stream on which no timeout can be set, and the
//!   WebSocket needs them.
//! - It picks chunked encoding for bodies of 32 KiB or more; the file server must always
//!   send an exact `Content-Length`.
//!
//! So this module builds on what is already compiled into the binary: heads are parsed by
//! `httparse` (through ureq and tungstenite), dates come from `jiff` (through env_logger).
//!
//! # How a connection is served
//!
//! - One *stage* thread per listener accepts connections and reads request heads from all
//!   of them at once (non-blocking sockets, poll(2), see [`sys`]). A connection that has not
//!   sent a whole head costs a socket and the bytes it sent, never a thread, and does not
//!   count against the worker cap. The whole head must arrive within `head_timeout` of the
//!   connection opening (or of its first byte after an idle keep-alive): a deadline, so
//!   trickling bytes cannot extend it. When the stage holds `max_waiting` connections, the
//!   newest one takes the place of the one that has waited longest (lingering closes first,
//!   then idle keep-alives, then slow heads): a slowloris cannot lock out a client that sends
//!   its head at once.
//! - A whole head goes to a worker (at most `workers` at once, threads started on demand).
//!   When all are busy it waits up to `QUEUE_WAIT`, then the stage answers 503 with
//!   `Retry-After`; so does it at once when `workers` requests already wait. Meanwhile, a
//!   request whose client has been stuck on its current step for `CUT_AFTER` (5 s) is cut
//!   to make room: at the cap, as at the stage, the slowest gives way (a slow-read attack
//!   cannot lock out everyone else; a transfer that moves is never picked). The refusal
//!   comes after the head was read, and the connection is drained before it is closed, so
//!   the client reads the 503 instead of a reset.
//! - A worker's writes are non-blocking with a deadline: every step of up to 1 MiB must be
//!   taken by the socket within `io_timeout`, or the connection is reset (the bytes still
//!   in the socket buffer are dropped, not trickled out for minutes). `SO_SNDTIMEO`
//!   would not do: the kernel restarts its timer on every byte of progress (a `sendfile` to
//!   a client reading a byte a second blocked for minutes), so a slow reader could hold a
//!   worker for ever.
//! - When a response is written, the worker is free. A keep-alive connection goes back to
//!   the stage to wait for its next request (pipelined requests already read are served at
//!   once); a closing one is shut down for writing and drained by the stage for a moment, so
//!   the last response is not lost to a reset.
//!
//! # Request heads
//!
//! Strict, per RFC 9112: exactly one `Host` in HTTP/1.1 (at most one in 1.0), at most one
//! `Content-Length`, never with `Transfer-Encoding`; no NUL or other control byte, no
//! obs-fold, no whitespace before a colon (httparse refuses those); origin-form,
//! absolute-form (its authority is the host) and `*` for OPTIONS. Bare LF line ends are
//! accepted, as RFC 9112 §2.2 allows. Anything else is answered 400 (431 for a head over the
//! listener's `max_head`) at once, and the connection is closed.
//!
//! Not handled: chunked request bodies (the request is answered and the connection closed),
//! HTTP/2, TLS (cloudflared terminates it), `Upgrade` other than the dashboard's WebSocket.

pub(crate) mod front;
mod sys;

pub(crate) use front::{Conn, Front, Handler, Limits, Outcome};

use std::time::SystemTime;

/// Binds a listener, waiting up to 30 s while the address is in use: a postflow that a
/// watchdog restarts right after a crash or a kill can find its own port still held for a
/// while by the process that ended (measured under Wine: the restart's bind still failed
/// with WSAEADDRINUSE after 5 s, 1 run in 2). Anything else, or a port still taken after
/// that, is the caller's error.
pub fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut said = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < give_up =>
            {
                if !said {
                    log::info!("{addr} is in use; trying again for 30 s (a process that just ended may still hold it)");
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Header fields accepted in one request head (431 beyond).
const MAX_HEADERS: usize = 64;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: …, chunked`: never decoded here, so the connection closes after the
    /// answer.
    Chunked,
}

/// A request head, checked and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The path of the target, still percent-encoded (`*` for `OPTIONS *`).
    pub path: String,
    /// The query without `?` ("" if none).
    pub query: String,
    /// Who the request is for: the absolute-form target's authority, else `Host`.
    pub authority: String,
    pub http11: bool,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before its body.
    pub expect_continue: bool,
}

impl Request {
    /// The first value of a header (`name` lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The only value of a header that must appear at most once; `Err` if it is repeated.
    pub fn single(&self, name: &str) -> Result<Option<&str>, ()> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        match values.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }

    /// A query parameter, form-decoded (`+` is a space). A value with a broken escape is
    /// returned as sent, so the caller can say what was wrong with it.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| {
                let spaced = v.replace('+', " ");
                match percent_decode(&spaced) {
                    Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    None => v.to_string(),
                }
            })
        })
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The `Connection` header an answer to this request carries: `close` when the
    /// connection ends after it, `keep-alive` for an HTTP/1.0 client that asked for it.
    pub fn connection_header(&self, keep_alive: bool) -> Option<&'static str> {
        match (keep_alive, self.http11) {
            (false, _) => Some("close"),
            (true, false) => Some("keep-alive"),
            (true, true) => None,
        }
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// No whole head yet.
    Partial,
    /// A whole head of `len` bytes (what follows is body or the next request).
    Complete(Request, usize),
    /// Not a request this front serves: answer this status and close.
    Invalid(u16, &'static str),
}

/// Parses the head at the start of `buf`, allowing at most `max_head` bytes for it.
pub(crate) fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        Ok(_) => return Parsed::Invalid(431, "request head too large"),
        Err(e) => return Parsed::Invalid(parse_error(e).0, parse_error(e).1),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Invalid(400, "malformed request line");
    };
    match check(method, target, version == 1, req.headers) {
        Ok(request) => Parsed::Complete(request, len),
        Err(why) => Parsed::Invalid(400, why),
    }
}

fn parse_error(e: httparse::Error) -> (u16, &'static str) {
    use httparse::Error::*;
    match e {
        TooManyHeaders => (431, "too many header fields"),
        HeaderName => (400, "malformed header field name"),
        HeaderValue => (400, "control character in a header field value"),
        Version => (400, "unsupported HTTP version"),
        NewLine => (400, "malformed line end"),
        Token | Status => (400, "malformed request line"),
    }
}

/// The framing rules httparse leaves to its caller.
fn check(
    method: &str,
    target: &str,
    http11: bool,
    raw: &[httparse::Header<'_>],
) -> Result<Request, &'static str> {
    let headers: Vec<(String, String)> = raw
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (
                h.name.to_ascii_lowercase(),
                value.trim_matches([' ', '\t']).to_string(),
            )
        })
        .collect();
    let named = |name: &'static str| headers.iter().filter(move |(n, _)| n == name);

    let hosts: Vec<&str> = named("host").map(|(_, v)| v.as_str()).collect();
    let host = match hosts.as_slice() {
        [] if http11 => return Err("no Host header field"),
        [] => "",
        [host] => *host,
        _ => return Err("more than one Host header field"),
    };
    if !host.bytes().all(is_authority_byte) {
        return Err("malformed Host header field");
    }
    let (authority, path, query) = split_target(method, target)?;

    let lengths: Vec<&str> = named("content-length").map(|(_, v)| v.as_str()).collect();
    let chunked = named("transfer-encoding").count() > 0;
    let body = match (lengths.as_slice(), chunked) {
        ([], false) => Body::None,
        ([length], false) => match length.parse::<u64>() {
            Ok(0) => Body::None,
            Ok(n) if length.bytes().all(|b| b.is_ascii_digit()) => Body::Length(n),
            _ => return Err("malformed Content-Length"),
        },
        ([], true) if !http11 => return Err("Transfer-Encoding in an HTTP/1.0 request"),
        ([], true) => {
            // RFC 9112 §6.3: unless chunked comes last, the body's end cannot be known.
            let last = named("transfer-encoding")
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .rfind(|c| !c.is_empty());
            if !last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
                return Err("Transfer-Encoding does not end with chunked");
            }
            Body::Chunked
        }
        ([_], true) => return Err("both Content-Length and Transfer-Encoding"),
        (_, _) => return Err("more than one Content-Length"),
    };

    let has_token = |name: &'static str, token: &str| {
        named(name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let close = has_token("connection", "close");
    let keep_alive =
        !close && (http11 || has_token("connection", "keep-alive")) && body != Body::Chunked;
    let expect_continue = http11 && has_token("expect", "100-continue");
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        authority: authority.unwrap_or(host).to_string(),
        http11,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// Splits a request target into (authority of an absolute-form target, path, query).
#[allow(clippy::type_complexity)]
fn split_target<'t>(
    method: &str,
    target: &'t str,
) -> Result<(Option<&'t str>, &'t str, &'t str), &'static str> {
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((None, "*", ""))
        } else {
            Err("the target * is only for OPTIONS")
        };
    }
    let (authority, rest) = if target.starts_with('/') {
        (None, target)
    } else {
        // RFC 9112 §3.2.2: a server MUST accept the absolute form.
        let scheme_end = target.find("://").ok_or("malformed request target")?;
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("malformed request target");
        }
        let after = &target[scheme_end + 3..];
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        // RFC 9110 §4.2.4: userinfo in an http URI is to be treated as an error.
        if authority.is_empty()
            || authority.contains('@')
            || !authority.bytes().all(is_authority_byte)
        {
            return Err("malformed authority in the request target");
        }
        (Some(authority), &after[end..])
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok((authority, if path.is_empty() { "/" } else { path }, query))
}

/// `uri-host [ ":" port ]` characters (RFC 3986 §3.2.2: reg-name, IP literal, IPv4).
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

/// A response whose body is in memory.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire, in one buffer: one write, so a client that reads only the first
    /// segment (tungstenite does, for a refused upgrade) still gets the body. `head_only` for
    /// HEAD: the same head, no body.
    pub fn encode(&self, head_only: bool, connection: Option<&str>) -> Vec<u8> {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut out = head(
            self.status,
            &headers,
            Some(self.body.len() as u64),
            connection,
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A response head: status line, `Date`, `headers`, `Content-Length` (when given), and
/// `Connection` (when given), then the empty line.
pub(crate) fn head(
    status: u16,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
    connection: Option<&str>,
) -> String {
    let mut out = String::with_capacity(256);
    let date = crate::timefmt::http_date(SystemTime::now());
    let mut line = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    line(
        &format!("HTTP/1.1 {status} {}\r\nDate", reason(status)),
        &date,
    );
    for (name, value) in headers {
        line(name, value);
    }
    if let Some(len) = content_length {
        line("Content-Length", &len.to_string());
    }
    if let Some(connection) = connection {
        line("Connection", connection);
    }
    out.push_str("\r\n");
    out
}

/// The reason phrase of each status either listener sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        206 => "Partial Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Decodes `%XX` escapes; `None` on a broken one (`%zz`, `%4` at the end).
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
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
    char::from(b).to_digit(16).map(|d| d as u8)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &[u8]) -> Request {
        match parse(raw, 8192) {
            Parsed::Complete(req, len) => {
                assert_eq!(len, raw.len(), "{:?}", String::from_utf8_lossy(raw));
                req
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn refused(raw: &[u8]) -> u16 {
        match parse(raw, 8192) {
            Parsed::Invalid(status, _) => status,
            other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn parses_a_cloudflared_request() {
        let req = ok(b"GET /f/abc/a%20b.mov HTTP/1.1\r\nHost: x.trycloudflare.com\r\nRange:  bytes=0-9 \r\nConnection: keep-alive\r\nCf-Warp-Tag-Id: 1\r\n\r\n");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/f/abc/a%20b.mov");
        assert_eq!(req.authority, "x.trycloudflare.com");
        assert!(req.http11 && req.keep_alive);
        assert_eq!(req.single("range"), Ok(Some("bytes=0-9")));
        assert_eq!(req.body, Body::None);
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_is_431() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n", 8192),
            Parsed::Partial
        );
        assert_eq!(parse(b"", 8192), Parsed::Partial);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse(big.as_bytes(), 64),
            Parsed::Invalid(431, "request head too large")
        );
        assert_eq!(
            parse(&big.as_bytes()[..70], 64),
            Parsed::Invalid(431, "request head too large")
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    #[test]
    fn host_must_be_there_once() {
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        // HTTP/1.0 may leave it out; an empty value is allowed (RFC 9112 §3.2).
        assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").authority, "");
        assert_eq!(ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").authority, "");
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").authority,
            "[::1]:8080"
        );
    }

    #[test]
    fn the_absolute_form_is_accepted_and_names_the_host() {
        let req = ok(b"GET http://Example.com:8081/f/t/a.mov?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(req.path, "/f/t/a.mov");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.authority, "Example.com:8081");
        assert_eq!(ok(b"GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n").path, "/");
        assert_eq!(ok(b"GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n").query, "q");
        for bad in [
            &b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(refused(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path, "*");
    }

    #[test]
    fn body_framing_is_strict() {
        let req = ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(req.body, Body::Length(12));
        assert!(req.keep_alive);
        assert_eq!(
            ok(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body,
            Body::None
        );
        let chunked = ok(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.body, Body::Chunked);
        assert!(
            !chunked.keep_alive,
            "a body we cannot frame ends the connection"
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(refused(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn control_bytes_folds_and_bad_request_lines_are_400() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1 x\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ] {
            assert_eq!(refused(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        // Known at once, without waiting for the end of the head.
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nX: a\0", 8192),
            Parsed::Invalid(400, _)
        ));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let req = ok(b"GET /x HTTP/1.1\nHost: h\nRange: bytes=0-1\n\n");
        assert_eq!(req.path, "/x");
        assert_eq!(req.header("range"), Some("bytes=0-1"));
        // A stray empty line before the request is skipped (RFC 9112 §2.2).
        assert_eq!(ok(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").path, "/");
    }

    #[test]
    fn connection_and_expect_tokens() {
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        let ten = ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(ten.keep_alive);
        assert_eq!(ten.connection_header(true), Some("keep-alive"));
        assert_eq!(ten.connection_header(false), Some("close"));
        let post =
            ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(post.expect_continue);
        assert_eq!(post.connection_header(true), None);
    }

    #[test]
    fn query_parameters_and_cookies() {
        let req = ok(b"GET /?state=a%20b+c&bad=%zz&flag HTTP/1.1\r\nHost: h\r\nCookie: a=1; postflow_token=xyz\r\n\r\n");
        assert_eq!(req.query_param("state").as_deref(), Some("a b c"));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("none"), None);
        assert_eq!(req.cookie("postflow_token"), Some("xyz"));
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_decode("a%20b%E2%9C%93").unwrap(), "a b✓".as_bytes());
        assert_eq!(percent_decode("%2e%2E").unwrap(), b"..");
        for bad in ["%zz", "%4", "100%"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
        assert_eq!(percent_encode(b"A_1-2.mov"), "A_1-2.mov");
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

    #[test]
    fn a_response_has_date_length_and_the_connection_it_was_given() {
        let r = Response::new(405, "application/json", "{}").with_header("Allow", "GET, HEAD");
        let text = String::from_utf8(r.encode(false, Some("close"))).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\nDate: "),
            "{text}"
        );
        assert!(text.contains(" GMT\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(
            text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
            "{text}"
        );
        let head = String::from_utf8(r.encode(true, None)).unwrap();
        assert!(head.ends_with("Content-Length: 2\r\n\r\n"), "{head}");
    }
}
