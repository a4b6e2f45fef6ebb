//! `Range: bytes=…` request header (RFC 9110 §14.1.2, §14.2), as a pure function.
//!
//! Only single byte ranges are honoured. A header that is absent, malformed, uses another
//! unit, or asks for several ranges is ignored and the whole file is sent with 200, which
//! RFC 9110 §14.2 allows ("a server MAY ignore the Range header field"). That keeps the
//! server free of multipart/byteranges, which neither Frame.io nor Cloudflare needs.
#![forbid(unsafe_code)]

/// What a request's `Range` header asks of a representation `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: send the whole representation with 200.
    Whole,
    /// Send bytes `start..=end` (inclusive, already clamped to the length) with 206.
    Partial { start: u64, end: u64 },
    /// A well-formed range that selects no byte: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// One `range-spec` as written by the client, before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`
    FromTo(u64, u64),
    /// `first-`
    From(u64),
    /// `-suffix_length`
    Suffix(u64),
}

/// Parses a `Range` header value. `None` means "ignore the header": malformed, another
/// unit, or more than one range.
pub fn parse(value: &str) -> Option<RangeSpec> {
    let (unit, set) = value.trim_matches(is_ows).split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    // `1#range-spec`: recipients skip empty list elements and OWS around commas.
    let mut specs = set
        .split(',')
        .map(|s| s.trim_matches(is_ows))
        .filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(RangeSpec::Suffix(digits(last)?)),
        (false, true) => Some(RangeSpec::From(digits(first)?)),
        (false, false) => {
            let (first, last) = (digits(first)?, digits(last)?);
            // RFC 9110 §14.1.1: last-pos < first-pos makes the range-spec invalid.
            (first <= last).then_some(RangeSpec::FromTo(first, last))
        }
        (true, true) => None,
    }
}

impl RangeSpec {
    /// Applies the spec to a representation `len` bytes long (RFC 9110 §14.1.2).
    pub fn resolve(self, len: u64) -> RangeRequest {
        match self {
            RangeSpec::FromTo(first, _) | RangeSpec::From(first) if first >= len => {
                RangeRequest::Unsatisfiable
            }
            RangeSpec::FromTo(start, last) => RangeRequest::Partial {
                start,
                end: last.min(len - 1),
            },
            RangeSpec::From(start) => RangeRequest::Partial {
                start,
                end: len - 1,
            },
            RangeSpec::Suffix(0) => RangeRequest::Unsatisfiable,
            // A suffix on an empty file selects the whole (empty) file, and `bytes 0--1/0`
            // cannot be written: answer 200 with no body.
            RangeSpec::Suffix(_) if len == 0 => RangeRequest::Whole,
            RangeSpec::Suffix(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        }
    }
}

/// The whole decision for one request: `header` is the `Range` value, if any.
pub fn resolve(header: Option<&str>, len: u64) -> RangeRequest {
    match header.and_then(parse) {
        Some(spec) => spec.resolve(len),
        None => RangeRequest::Whole,
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `1*DIGIT` as a u64; `None` on anything else, including overflow (`parse` would also
/// accept a leading `+`, which the grammar does not).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Partial, Unsatisfiable, Whole};
    use super::*;

    fn r(header: &str, len: u64) -> RangeRequest {
        resolve(Some(header), len)
    }

    #[test]
    fn no_header_is_whole() {
        assert_eq!(resolve(None, 10), Whole);
    }

    #[test]
    fn every_single_range_form() {
        assert_eq!(r("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(r("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(r("bytes=3-", 10), Partial { start: 3, end: 9 });
        assert_eq!(r("bytes=-4", 10), Partial { start: 6, end: 9 });
        assert_eq!(r("bytes=0-", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=9-9", 10), Partial { start: 9, end: 9 });
    }

    #[test]
    fn end_past_eof_is_clamped() {
        assert_eq!(r("bytes=5-100", 10), Partial { start: 5, end: 9 });
        assert_eq!(
            r("bytes=0-18446744073709551615", 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(r("bytes=-100", 10), Partial { start: 0, end: 9 });
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=18446744073709551615-", 10), Unsatisfiable);
    }

    #[test]
    fn suffix_of_an_empty_file_is_the_whole_empty_file() {
        assert_eq!(r("bytes=-5", 0), Whole);
        assert_eq!(r("bytes=-0", 0), Unsatisfiable);
    }

    #[test]
    fn malformed_is_ignored() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=abc",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=0x10-",
            "items=0-1",
            "bytes 0-1",
            "bytes=18446744073709551616-",
            "bytes=0-18446744073709551616",
            "bytes=-18446744073709551616",
            "bytes=99999999999999999999999999-",
            "bytes=1 -2",
            "bytes=1- 2",
            "bytes=1\u{a0}-2",
            "bytes=,",
        ] {
            assert_eq!(r(bad, 10), Whole, "{bad:?}");
        }
    }

    #[test]
    fn multiple_ranges_are_ignored() {
        assert_eq!(r("bytes=0-1,3-4", 10), Whole);
        assert_eq!(r("bytes=0-1, 3-4", 10), Whole);
        assert_eq!(r("bytes=-1,0-", 10), Whole);
        assert_eq!(r("bytes=0-1,abc", 10), Whole);
        assert_eq!(r("bytes=20-30,40-", 10), Whole);
    }

    #[test]
    fn whitespace_allowed_only_around_list_elements() {
        assert_eq!(r("  bytes=2-5 ", 10), Partial { start: 2, end: 5 });
        assert_eq!(r("bytes= 2-5\t", 10), Partial { start: 2, end: 5 });
        assert_eq!(r("bytes=2-5, ", 10), Partial { start: 2, end: 5 });
        assert_eq!(r("bytes =2-5", 10), Whole);
        assert_eq!(r("bytes=2 - 5", 10), Whole);
    }

    #[test]
    fn unit_is_case_insensitive() {
        assert_eq!(r("Bytes=1-1", 10), Partial { start: 1, end: 1 });
        assert_eq!(r("BYTES=-1", 10), Partial { start: 9, end: 9 });
    }

    #[test]
    fn leading_zeros_are_numbers() {
        assert_eq!(r("bytes=0002-0003", 10), Partial { start: 2, end: 3 });
    }
}
