//! Human formatting of times: Unix seconds as UTC ISO-8601 and uptimes as
//! `1d 2h 3m 4s`, without a date crate.
//!
//! Owns: pure functions only. Must not: read the clock or the time zone.

/// `2024-05-01T12:34:56Z` for any `i64` second count (years outside 0..=9999
/// print with more digits or a sign rather than failing).
pub fn format_utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day % 3600 / 60, secs_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`). Callers pass at most `i64::MAX / 86_400` in magnitude,
/// so no step overflows.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are in the small ranges noted above.
    (year, month as u32, day as u32)
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
        assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn before_the_epoch() {
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(format_utc(-62_135_596_800), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn extremes_do_not_panic() {
        assert!(format_utc(i64::MAX).ends_with('Z'));
        assert!(format_utc(i64::MIN).starts_with('-'));
    }

    #[test]
    fn every_day_of_a_leap_cycle_round_trips_month_lengths() {
        // 2000-01-01 .. 2003-12-31: days advance by one and months have the right length.
        let mut previous: Option<(i64, u32, u32)> = None;
        for days in 10_957..10_957 + 1461 {
            let (y, m, d) = civil_from_days(days);
            if let Some((py, pm, pd)) = previous {
                let next_day = (y, m, d) == (py, pm, pd + 1);
                let next_month = d == 1 && ((y == py && m == pm + 1) || (y == py + 1 && m == 1 && pm == 12));
                assert!(next_day || next_month, "{py}-{pm}-{pd} -> {y}-{m}-{d}");
                if next_month {
                    let len = match pm {
                        2 if py % 4 == 0 => 29,
                        2 => 28,
                        4 | 6 | 9 | 11 => 30,
                        _ => 31,
                    };
                    assert_eq!(pd, len, "{py}-{pm}");
                }
            }
            previous = Some((y, m, d));
        }
    }

    #[test]
    fn uptime_units() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(3600), "1h 0m 0s");
        assert_eq!(format_uptime(93_784), "1d 2h 3m 4s");
    }
}
