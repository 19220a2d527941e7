//! Human formatting of times: Unix seconds as UTC ISO-8601 (through
//! humantime) and uptimes as `1d 2h 3m 4s`.
//!
//! Owns: pure functions only. Must not: read the clock or the time zone.
//! The uptime stays hand-written: humantime's `format_duration` writes
//! `1day 2h` and drops zero units, and edgeaictl's output is a contract.

use std::time::{Duration, SystemTime};

/// Last second humantime formats: 9999-12-31T23:59:59Z.
const LAST_FORMATTED: i64 = 253_402_300_799;

/// `2024-05-01T12:34:56Z`; a second count outside 1970..=9999, which no
/// daemon writes but a corrupt row might hold, prints as `@SECONDS` (as
/// `date -d @SECONDS` takes it) instead of failing.
pub fn format_utc(unix_secs: i64) -> String {
    match u64::try_from(unix_secs) {
        Ok(secs) if unix_secs <= LAST_FORMATTED => {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        _ => format!("@{unix_secs}"),
    }
}

/// `3d 4h 5m 6s`, leaving out leading zero units (`0s` for zero).
pub fn format_uptime(secs: u64) -> String {
    let parts = [(secs / 86_400, "d"), (secs % 86_400 / 3600, "h"), (secs % 3600 / 60, "m"), (secs % 60, "s")];
    let first = parts.iter().position(|(n, _)| *n != 0).unwrap_or(parts.len() - 1);
    parts[first..].iter().map(|(n, unit)| format!("{n}{unit}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(format_utc(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(format_utc(LAST_FORMATTED), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn out_of_range_prints_the_seconds_instead_of_panicking() {
        assert_eq!(format_utc(-1), "@-1");
        assert_eq!(format_utc(LAST_FORMATTED + 1), "@253402300800");
        assert_eq!(format_utc(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(format_utc(i64::MIN), format!("@{}", i64::MIN));
    }

    #[test]
    fn uptime_units() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(3600), "1h 0m 0s");
        assert_eq!(format_uptime(93_784), "1d 2h 3m 4s");
    }
}
