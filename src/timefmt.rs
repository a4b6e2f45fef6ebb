//! Dates on the wire: HTTP-date (RFC 9110 §5.6.7: we write IMF-fixdate and read all three
//! formats a recipient must accept) for both listeners and Frame.io's `Retry-After`, and
//! RFC 3339 for the WebSocket envelope and Frame.io's timestamps.
//!
//! The calendar is `jiff`'s (already in the binary through env_logger): its printers write
//! both formats, and its civil types check and convert what is read. The few fixed fields of
//! each format are split here by hand on purpose: any of jiff's own parsers (strtime, the
//! ISO 8601 one) pulls in about 250 KB of the binary (measured: 3.76 MB -> 4.03 MB release,
//! stripped), for what is four fixed layouts.

use std::time::SystemTime;

use jiff::civil::{DateTime, Weekday};
use jiff::fmt::rfc2822;
use jiff::tz::Offset;
use jiff::Timestamp;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [(&str, &str, Weekday); 7] = [
    ("Mon", "Monday", Weekday::Monday),
    ("Tue", "Tuesday", Weekday::Tuesday),
    ("Wed", "Wednesday", Weekday::Wednesday),
    ("Thu", "Thursday", Weekday::Thursday),
    ("Fri", "Friday", Weekday::Friday),
    ("Sat", "Saturday", Weekday::Saturday),
    ("Sun", "Sunday", Weekday::Sunday),
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times before the epoch are written as the epoch.
pub fn http_date(time: SystemTime) -> String {
    rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&since_epoch(time))
        // Only years outside 0000..=9999 fail, and since_epoch gives none of those.
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".to_string())
}

/// Seconds since the epoch of an HTTP-date in any of the three formats; `None` if it is not
/// one, names a weekday the date does not fall on, or is before 1970 (the caller then
/// treats the validator as not matching).
pub fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split(' ').collect();
    let (weekday, day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] => (wd.strip_suffix(',')?, *d, *m, number(y, 4)?, *t),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() {
                return None;
            }
            // Two-digit years: the century that is not in the far future (RFC 9110 §5.6.7).
            let yy = number(y, 2)?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (wd.strip_suffix(',')?, d, m, year, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994 (a one-digit day padded with a space)
        [wd, m, "", d, t, y] | [wd, m, d, t, y] => (*wd, *d, *m, number(y, 4)?, *t),
        _ => return None,
    };
    let day = day.parse::<i8>().ok().filter(|_| day.len() <= 2)?;
    let month = MONTHS.iter().position(|m| *m == month)? as i8 + 1;
    let mut hms = time.split(':');
    let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let civil = civil(
        year,
        month,
        day,
        number(h, 2)?,
        number(m, 2)?,
        number(s, 2)?,
        0,
    )?;
    let (_, _, named) = DAYS
        .iter()
        .find(|(short, long, _)| weekday == *short || weekday == *long)?;
    if civil.weekday() != *named {
        return None;
    }
    let secs = Offset::UTC.to_timestamp(civil).ok()?.as_second();
    u64::try_from(secs).ok()
}

/// `2024-05-01T12:34:56.789Z` (UTC, milliseconds). Times before the epoch are the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    format!("{:.3}", since_epoch(time))
}

/// Unix milliseconds of an RFC 3339 timestamp such as Frame.io's
/// `2025-06-26T20:14:33.796116Z` (any fraction, `Z` or a `+hh:mm` offset).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>, width| number(s.get(r)?, width);
    let (year, month, day) = (num(0..4, 4)?, num(5..7, 2)?, num(8..10, 2)?);
    let (hour, min, sec) = (num(11..13, 2)?, num(14..16, 2)?, num(17..19, 2)?);
    let mut rest = s.get(19..)?;
    let mut nanos = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = frac[..digits]
            .chars()
            .chain("00000000".chars())
            .take(9)
            .collect();
        nanos = padded.parse::<i32>().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (number(&rest[1..3], 2)? * 3600 + number(&rest[4..6], 2)? * 60) as i32
        }
        _ => return None,
    };
    let civil = civil(year, month as i8, day as i8, hour, min, sec, nanos)?;
    let offset = Offset::from_seconds(offset_secs).ok()?;
    let ms = offset.to_timestamp(civil).ok()?.as_millisecond();
    u64::try_from(ms).ok()
}

/// A checked civil date and time (a leap second reads as the second before it).
fn civil(year: u64, month: i8, day: i8, h: u64, m: u64, s: u64, nanos: i32) -> Option<DateTime> {
    DateTime::new(
        i16::try_from(year).ok()?,
        month,
        day,
        i8::try_from(h).ok()?,
        i8::try_from(m).ok()?,
        i8::try_from(s.min(59)).ok()?,
        nanos,
    )
    .ok()
}

fn number(s: &str, width: usize) -> Option<u64> {
    (s.len() == width && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
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
        // RFC 9110 §5.6.7 asks recipients to be robust: a one-digit day is read.
        assert_eq!(
            parse_http_date("Sun, 6 Nov 1994 08:49:37 GMT"),
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
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun Nov 16 08:49:37 1994",
            "Tue, 30 Feb 1999 08:49:37 GMT",
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
