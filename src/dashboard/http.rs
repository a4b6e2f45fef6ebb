//! Just enough HTTP/1.1 for the dashboard: one request per connection (`Connection: close`),
//! bodies only with `Content-Length` and at most `MAX_BODY` bytes.
//!
//! Why not tiny_http here: the WebSocket needs the raw `TcpStream` (read and write timeouts, so
//! a viewer that never reads cannot hold a thread forever), and tiny_http's `upgrade` hands back
//! a boxed stream on which no timeout can be set. Owning the socket from `accept` on also puts
//! a read timeout on every request, so a slow client cannot pin a thread either.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Request bodies larger than this are refused (413).
pub const MAX_BODY: usize = 64 * 1024;
/// The request line and headers together may not exceed this (431).
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string, e.g. `/api/jobs`.
    pub path: String,
    /// The raw query string without `?` ("" if none).
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

/// Why a request could not be read; each maps to the status sent back, if any.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed or timed out before a whole request arrived: send nothing.
    Gone,
    /// Malformed request line or header.
    Bad(&'static str),
    /// Head over `MAX_HEAD`.
    HeadTooLarge,
    /// Body over `MAX_BODY`.
    BodyTooLarge,
    /// A body without `Content-Length` (chunked uploads are not supported).
    LengthRequired,
}

/// Reads one request from `reader` (which must have a read timeout set).
pub fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, ReadError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - head.len() + 1) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        if head.len() > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear(); // tolerate a stray empty line before the request (RFC 9112 2.2)
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&head).map_err(|_| ReadError::Bad("head is not UTF-8"))?;
    let mut lines = text.lines();
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad("malformed request line"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(ReadError::Bad("malformed header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::LengthRequired);
    }
    if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(ReadError::BodyTooLarge);
        }
        req.body = vec![0; len];
        reader
            .read_exact(&mut req.body)
            .map_err(|_| ReadError::Gone)?;
    }
    Ok(req)
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             X-Frame-Options: DENY\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        // One write: a client that reads only the first segment (tungstenite does, for a
        // refused upgrade) still gets the body, and small answers go out in one packet.
        let mut all = head.into_bytes();
        all.extend_from_slice(&self.body);
        out.write_all(&all)?;
        out.flush()
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }
}
