//! Frame.io v4 and Adobe IMS: the token owner ([`auth`]) and the API client ([`api`]).
//!
//! Facts about both services, with sources, are in `reference/frameio_v4_contract.md`. Every
//! call to Frame.io goes through [`api::Api`], which asks [`auth::Auth`] for a valid access
//! token; nothing else touches `tokens.json`.
//!
//! This file holds the small pure helpers both sides need (URL and form encoding, Base64 for
//! HTTP Basic, random `state` values) and the one HTTP agent configuration.

pub mod api;
pub mod auth;

use std::time::Duration;

pub use api::{Api, ApiError, RetryPolicy};
pub use auth::{Auth, AuthError, AuthState};

/// The one agent configuration for IMS and Frame.io: bounded connect and read waits so no
/// call can hang a worker forever; `http_status_as_error(false)` so Frame.io's and IMS's
/// error bodies are read and shown; no redirects (an API answering 3xx is an error, and a
/// bearer token must never follow a redirect to another host).
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_send_request(Some(Duration::from_secs(30)))
        .timeout_send_body(Some(Duration::from_secs(60)))
        .timeout_recv_response(Some(Duration::from_secs(90)))
        .timeout_recv_body(Some(Duration::from_secs(90)))
        .user_agent(concat!("postflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values and
/// `application/x-www-form-urlencoded` bodies alike).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` and, as forms and query strings do, `+` as a space. Malformed escapes are
/// kept as they are.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x%20y`, each name and value encoded.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Splits a query string into decoded pairs; a name without `=` has an empty value.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

/// Standard Base64 with padding (RFC 4648 §4), for `Authorization: Basic`.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `n` random bytes from the OS's random source (`getrandom`: getrandom(2), ProcessPrng,
/// getentropy), as lowercase hex. There is no weaker fallback: these become OAuth `state`
/// values and file names that must not be guessed.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    Ok(data_encoding::HEXLOWER.encode(&random_bytes(n)?))
}

/// `n` bytes from the OS's random source; an error says the OS refused, not a weaker value.
fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| {
        std::io::Error::other(format!("the operating system gave no random bytes: {e}"))
    })?;
    Ok(buf)
}

pub(crate) fn jitter() -> f64 {
    // Not a secret, and a retry must never fail for want of one: the standard library's
    // randomly keyed hasher is enough to spread clients apart.
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn url_encoding_round_trips() {
        let s = "openid email,profile a+b/c?d=e&f%g ü";
        assert_eq!(url_decode(&url_encode(s)), s);
        assert_eq!(url_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(url_decode("a+b%2fc%zz%"), "a b/c%zz%");
        assert_eq!(
            parse_query("code=x%2By&state=s&flag"),
            [
                ("code".to_string(), "x+y".to_string()),
                ("state".to_string(), "s".to_string()),
                ("flag".to_string(), String::new())
            ]
        );
        assert_eq!(form_encode(&[("a", "1 2"), ("b", "&")]), "a=1%202&b=%26");
    }

    #[test]
    fn random_values_differ_and_jitter_is_a_fraction() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).unwrap());
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
