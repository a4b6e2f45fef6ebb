//! Dates on the wire, on `jiff` (already in the binary through env_logger): HTTP-date
//! (RFC 9110 §5.6.7: we write IMF-fixdate and read all three formats a recipient must accept)
//! for both listeners and Frame.io's `Retry-After`, and RFC 3339 for the WebSocket envelope
//! and Frame.io's timestamps.

use std::time::SystemTime;

use jiff::fmt::{rfc2822, strtime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The three HTTP-date formats: IMF-fixdate, RFC 850, asctime.
const HTTP_DATE_FORMATS: [&str; 3] = [
    "%a, %d %b %Y %H:%M:%S GMT",
    "%A, %d-%b-%y %H:%M:%S GMT",
    "%a %b %e %H:%M:%S %Y",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times before the epoch are written as the epoch.
pub fn http_date(time: SystemTime) -> String {
    rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&since_epoch(time))
        // Only years outside 0000..=9999 fail, and SystemTime never gives those here.
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".to_string())
}

/// Seconds since the epoch of an HTTP-date in any of the three formats; `None` if it is not
/// one (the caller then treats the validator as not matching).
pub fn parse_http_date(value: &str) -> Option<u64> {
    let civil = HTTP_DATE_FORMATS
        .iter()
        .find_map(|format| strtime::parse(format, value).ok()?.to_datetime().ok())?;
    let secs = civil.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second();
    u64::try_from(secs).ok()
}

/// `2024-05-01T12:34:56.789Z` (UTC, milliseconds). Times before the epoch are the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    format!("{:.3}", since_epoch(time))
}

/// Unix milliseconds of an RFC 3339 timestamp such as Frame.io's
/// `2025-06-26T20:14:33.796116Z` (any fraction, `Z` or a `+hh:mm` offset).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let ts: Timestamp = s.parse().ok()?;
    u64::try_from(ts.as_millisecond()).ok()
}

fn since_epoch(time: SystemTime) -> Timestamp {
    Timestamp::try_from(time)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .max(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            http_date(at(4_102_444_799)),
            "Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }

    #[test]
    fn parses_the_three_formats() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Wed Nov 16 08:49:37 1994"),
            Some(784_975_777)
        );
        // RFC 9110 §5.6.7 asks recipients to be robust: one-digit days and hours are read.
        assert_eq!(
            parse_http_date("Sun, 6 Nov 1994 8:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn round_trips_every_day_for_two_centuries() {
        for day in (0..200 * 366).step_by(7) {
            let secs = day * 86_400 + 12 * 3600 + 34 * 60 + 56;
            assert_eq!(parse_http_date(&http_date(at(secs))), Some(secs));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun Nov 16 08:49:37 1994",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "\"abc\"",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_formats_utc_milliseconds() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_750_968_873_796)),
            "2025-06-26T20:14:33.796Z"
        );
    }

    #[test]
    fn frameio_timestamps_parse_to_unix_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2025-06-26T20:14:33.796116Z"),
            Some(1_750_968_873_796)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-06-26T22:14:33+02:00"),
            Some(1_750_968_873_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:00:00.5Z"),
            Some(1_709_208_000_500)
        );
        for ms in (0..200u64 * 366)
            .step_by(13)
            .map(|d| d * 86_400_000 + 45_296_789)
        {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339_ms(&rfc3339(t)), Some(ms));
        }
        for bad in [
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-06-26T20:14:33",
            "2025-06-26T20:14:33.Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }
}
