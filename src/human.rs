//! Sizes and durations the way people write them, for log lines, notifications, `check` and
//! the status summary. One formatter each, so every place reads the same.

use std::time::Duration;

/// `999 B`, `1.2 MB`, `52.0 GB` (powers of 1000, as Frame.io and file browsers show sizes).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3 s`, `4 min 3 s`, `23 h 59 min`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_234_567), "1.2 MB");
        assert_eq!(size(52_000_000_000), "52.0 GB");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(Duration::from_secs(3)), "3 s");
        assert_eq!(duration(Duration::from_secs(243)), "4 min 3 s");
        assert_eq!(duration(Duration::from_secs(86_399)), "23 h 59 min");
    }
}
