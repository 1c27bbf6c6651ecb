//! HTTP-date (RFC 9110 §5.6.7) as a recipient reads it: the preferred IMF-fixdate and the two
//! obsolete formats (RFC 850 and C's asctime), with names in any letter case and `UTC` taken
//! for `GMT`, as §5.6.7 asks recipients to be liberal in what they accept for dates.
//!
//! A date is only ever compared with another or subtracted from one, so a day-name that does
//! not fit the date (`Mon, 06 Nov 1994`) is accepted: it is redundant, and origins get it wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// An HTTP-date in any of its three formats. A two-digit RFC 850 year is placed by the
/// 50-year rule against the current clock.
pub(super) fn parse(value: &[u8]) -> Option<SystemTime> {
    parse_with(value, SystemTime::now)
}

/// `parse`, with the clock that places two-digit years given.
#[cfg(test)]
fn parse_at(value: &[u8], now: SystemTime) -> Option<SystemTime> {
    parse_with(value, || now)
}

/// `parse`, reading the clock only for an RFC 850 date (the others do not need it).
fn parse_with(value: &[u8], now: impl FnOnce() -> SystemTime) -> Option<SystemTime> {
    let mut tokens = value
        .split(u8::is_ascii_whitespace)
        .filter(|t| !t.is_empty());
    let first = tokens.next()?;
    let fields = match first.strip_suffix(b",") {
        // IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT` or RFC 850 `Sunday, 06-Nov-94 …`.
        Some(day_name) => {
            if !is_day_name(day_name) {
                return None;
            }
            let date = tokens.next()?;
            let fields = if date.contains(&b'-') {
                let mut parts = date.split(|&b| b == b'-');
                let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() || year.len() != 2 {
                    return None;
                }
                let year = two_digit_year(number(year)?, now());
                Fields::new(day, month, year, tokens.next()?)?
            } else {
                let (month, year) = (tokens.next()?, tokens.next()?);
                if year.len() != 4 {
                    return None;
                }
                Fields::new(date, month, i64::from(number(year)?), tokens.next()?)?
            };
            fields.zoned(tokens.next()?)?
        }
        // asctime `Sun Nov  6 08:49:37 1994`: no zone, GMT implied.
        None => {
            if !is_day_name(first) {
                return None;
            }
            let (month, day, time, year) = (
                tokens.next()?,
                tokens.next()?,
                tokens.next()?,
                tokens.next()?,
            );
            if year.len() != 4 {
                return None;
            }
            Fields::new(day, month, i64::from(number(year)?), time)?
        }
    };
    if tokens.next().is_some() {
        return None;
    }
    fields.to_system_time()
}

/// The parts of a date once read, before they become a time.
#[derive(Clone, Copy, Debug)]
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Fields {
    fn new(day: &[u8], month: &[u8], year: i64, time: &[u8]) -> Option<Self> {
        if !(1..=2).contains(&day.len()) {
            return None;
        }
        let day = number(day)?;
        let month = month_number(month)?;
        let (hour, minute, second) = split_time(time)?;
        let fields = Fields {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        // Second 60 is a leap second (RFC 5322 §3.3 allows it); it reads as the next one.
        (day >= 1 && day <= days_in_month(year, month) && hour < 24 && minute < 60 && second <= 60)
            .then_some(fields)
    }

    /// Checks the zone of the formats that write one: GMT, or UTC which is the same clock.
    fn zoned(self, zone: &[u8]) -> Option<Self> {
        (zone.eq_ignore_ascii_case(b"GMT") || zone.eq_ignore_ascii_case(b"UTC")).then_some(self)
    }

    fn to_system_time(self) -> Option<SystemTime> {
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds = days * SECONDS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        if seconds >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
        }
    }
}

/// `HH:MM:SS`, each number exactly two digits.
fn split_time(time: &[u8]) -> Option<(u32, u32, u32)> {
    let [h1, h2, b':', m1, m2, b':', s1, s2] = *time else {
        return None;
    };
    Some((number(&[h1, h2])?, number(&[m1, m2])?, number(&[s1, s2])?))
}

/// A short run of ASCII digits (at most four are ever read).
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is the most recent past
/// year with the same last two digits; so it lands in (now − 50, now + 50].
fn two_digit_year(two_digits: u32, now: SystemTime) -> i64 {
    let this_year = year_of(now);
    let year = this_year - this_year.rem_euclid(100) + i64::from(two_digits);
    if year > this_year + 50 {
        year - 100
    } else if year <= this_year - 50 {
        year + 100
    } else {
        year
    }
}

fn year_of(time: SystemTime) -> i64 {
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    civil_year(seconds.div_euclid(SECONDS_PER_DAY))
}

const DAY_NAMES: [(&[u8], &[u8]); 7] = [
    (b"Mon", b"Monday"),
    (b"Tue", b"Tuesday"),
    (b"Wed", b"Wednesday"),
    (b"Thu", b"Thursday"),
    (b"Fri", b"Friday"),
    (b"Sat", b"Saturday"),
    (b"Sun", b"Sunday"),
];

/// A day-name, short (IMF-fixdate, asctime) or long (RFC 850), in any case; origins mix the
/// forms up, and either says the same.
fn is_day_name(name: &[u8]) -> bool {
    DAY_NAMES
        .iter()
        .any(|(short, long)| name.eq_ignore_ascii_case(short) || name.eq_ignore_ascii_case(long))
}

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn month_number(name: &[u8]) -> Option<u32> {
    let index = MONTHS.iter().position(|m| name.eq_ignore_ascii_case(m))?;
    u32::try_from(index + 1).ok()
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year of a day counted from 1970-01-01 (the inverse of `days_from_civil`, year only).
fn civil_year(days: i64) -> i64 {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let year = year_of_era + era * 400;
    if month_index >= 10 { year + 1 } else { year }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
    const EXAMPLE: u64 = 784_111_777;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn date(value: &str) -> Option<SystemTime> {
        parse_at(value.as_bytes(), at(1_700_000_000)) // November 2023
    }

    #[test]
    fn the_three_formats_of_rfc_9110() {
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
        ] {
            assert_eq!(date(value), Some(at(EXAMPLE)), "{value}");
        }
    }

    #[test]
    fn names_in_any_case_and_utc_for_gmt() {
        for value in [
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 utc",
            "SUNDAY, 06-nov-94 08:49:37 Utc",
            "sun NOV  6 08:49:37 1994",
            // A long day-name where the short one belongs, and surrounding whitespace.
            " Sunday, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(date(value), Some(at(EXAMPLE)), "{value}");
        }
    }

    #[test]
    fn two_digit_years_follow_the_fifty_year_rule() {
        // From 2023: up to 50 years ahead is ahead; beyond that it is the past century.
        let year = |yy: &str| date(&format!("Thursday, 01-Jan-{yy} 00:00:00 GMT")).map(year_of);
        assert_eq!(year("94"), Some(1994));
        assert_eq!(year("23"), Some(2023));
        assert_eq!(year("70"), Some(2070));
        assert_eq!(year("73"), Some(2073));
        assert_eq!(year("74"), Some(1974));
        assert_eq!(year("00"), Some(2000));
        // Late in a century the window reaches into the next one.
        let late = at(4_070_908_800); // 2099-01-01
        let in_2099 = |yy: &str| {
            parse_at(format!("Friday, 01-Jan-{yy} 00:00:00 GMT").as_bytes(), late).map(year_of)
        };
        assert_eq!(in_2099("10"), Some(2110));
        assert_eq!(in_2099("60"), Some(2060));
    }

    #[test]
    fn dates_before_1970_and_leap_days() {
        assert_eq!(date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            date("Wed, 31 Dec 1969 23:59:59 GMT"),
            UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
        assert!(date("Thu, 29 Feb 2024 12:00:00 GMT").is_some());
        assert_eq!(date("Fri, 29 Feb 2023 12:00:00 GMT"), None);
        assert!(date("Tue, 29 Feb 2000 12:00:00 GMT").is_some());
        assert_eq!(date("Thu, 29 Feb 1900 12:00:00 GMT"), None);
        assert_eq!(
            date("Sun, 06 Nov 1994 08:49:60 GMT"),
            Some(at(EXAMPLE + 23)),
            "a leap second reads as the next second"
        );
    }

    #[test]
    fn malformed_dates_are_none() {
        for value in [
            "",
            "0",
            "-1",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Now 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 006 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Funday, 06 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
        ] {
            assert_eq!(date(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_civil_calendar_round_trips() {
        for (year, month, day) in [(1970, 1, 1), (2000, 2, 29), (1600, 3, 1), (9999, 12, 31)] {
            assert_eq!(civil_year(days_from_civil(year, month, day)), year);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
            let now = UNIX_EPOCH.checked_add(Duration::from_secs(now >> 20)).unwrap_or(UNIX_EPOCH);
            let _ = parse_at(&bytes, now);
        }

        #[test]
        fn near_misses_never_panic(value in "[A-Za-z]{0,9},? [0-9]{0,3}[- ][A-Za-z]{0,4}[- ][0-9]{0,5} [0-9:]{0,9} [A-Za-z]{0,4}") {
            let _ = parse_at(value.as_bytes(), SystemTime::now());
        }

        #[test]
        fn every_imf_fixdate_reads_back(seconds in 0u64..253_402_300_799) {
            let written = httpdate::fmt_http_date(at(seconds));
            prop_assert_eq!(date(&written), Some(at(seconds)));
            prop_assert_eq!(date(&written.to_ascii_lowercase()), Some(at(seconds)));
        }
    }
}
