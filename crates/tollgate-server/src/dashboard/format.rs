//! Dates for people: Unix seconds shown as UTC dates and times, and the `YYYY-MM-DD` of a date input read back.
//! Civil-date arithmetic (Howard Hinnant's algorithms) rather than a date crate: this is all the dashboard needs.

use tollgate_core::tenant::Timestamp;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1–31, 1–12).
    (year, month as u32, day as u32)
}

/// (year, month 1–12, day 1–31) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-01`.
pub fn date(at: Timestamp) -> String {
    let (year, month, day) = civil_from_days(at.div_euclid(DAY));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `12-01`: a day on a chart's axis.
pub fn month_day(at: Timestamp) -> String {
    let (_, month, day) = civil_from_days(at.div_euclid(DAY));
    format!("{month:02}-{day:02}")
}

/// `2026-12-01 19:06 UTC`.
pub fn datetime(at: Timestamp) -> String {
    let seconds = at.rem_euclid(DAY);
    format!(
        "{} {:02}:{:02} UTC",
        date(at),
        seconds / 3_600,
        (seconds % 3_600) / 60
    )
}

/// A timestamp, or a dash for none.
pub fn maybe_datetime(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "—".to_owned(), datetime)
}

/// The start (00:00 UTC) of the day a date input names (`YYYY-MM-DD`); `None` for anything else, or a date that
/// does not exist (2026-02-30).
pub fn parse_date(raw: &str) -> Option<Timestamp> {
    let mut parts = raw.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // A day past the month's end lands in the next month: compare the round trip.
    (civil_from_days(days) == (year, month, day)).then_some(days * DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_read_as_utc_dates() {
        assert_eq!(datetime(0), "1970-01-01 00:00 UTC");
        assert_eq!(datetime(1_796_152_002), "2026-12-01 19:06 UTC");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(month_day(951_782_400), "02-29");
        assert_eq!(maybe_datetime(None), "—");
    }

    #[test]
    fn date_inputs_parse_to_the_day_start_and_impossible_dates_do_not() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_date(" 2026-12-01 "), Some(1_796_083_200));
        for bad in [
            "",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-00-10",
            "26-1",
            "x-y-z",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        for day in [0, 59, 60, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
