//! Local time for a tariff: the start of a local day as an instant, day lengths across DST,
//! day types (weekday or holiday) and calendar-month fractions for proration.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;

/// The instant a local date begins in `tz`.
///
/// Usually local midnight. When midnight is repeated (a DST fall-back at 00:00) the first
/// occurrence is the start; when midnight does not exist (a spring-forward at 00:00, as in
/// some South American zones) the day begins at the first local minute that exists.
pub fn start_of_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut local = date.and_time(NaiveTime::MIN);
    // A gap never exceeds a few hours; 24 h of minutes bounds the search for any real zone.
    for _ in 0..24 * 60 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => local += Duration::minutes(1),
        }
    }
    // Unreachable for tz data (no zone skips a whole day at midnight without a valid minute);
    // fall back to reading the date as UTC rather than panicking.
    date.and_time(NaiveTime::MIN).and_utc()
}

/// Length of a local day in seconds: 86 400 normally, 82 800 (23 h) on a spring-forward day and
/// 90 000 (25 h) on a fall-back day in zones with a one-hour DST shift.
pub fn day_length_s(tz: Tz, date: NaiveDate) -> i64 {
    let next = date.succ_opt().unwrap_or(date);
    (start_of_day(tz, next) - start_of_day(tz, date)).num_seconds()
}

/// The local wall-clock time of an instant.
pub(crate) fn local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The local date of an instant.
pub(crate) fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    local(tz, t).date()
}

/// What kind of day a local date is for time-of-use windows: its weekday, or a holiday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayType {
    /// A weekday or weekend day that is not a holiday.
    Weekday(Weekday),
    /// A date on the tariff's holiday calendar, whatever its weekday.
    Holiday,
}

impl DayType {
    /// All eight day types, in the order schedules are checked.
    pub const ALL: [DayType; 8] = [
        DayType::Weekday(Weekday::Mon),
        DayType::Weekday(Weekday::Tue),
        DayType::Weekday(Weekday::Wed),
        DayType::Weekday(Weekday::Thu),
        DayType::Weekday(Weekday::Fri),
        DayType::Weekday(Weekday::Sat),
        DayType::Weekday(Weekday::Sun),
        DayType::Holiday,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            DayType::Weekday(w) => w.num_days_from_monday() as usize,
            DayType::Holiday => 7,
        }
    }
}

impl fmt::Display for DayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayType::Weekday(w) => write!(f, "{}", w.to_string().to_lowercase()),
            DayType::Holiday => f.write_str("holiday"),
        }
    }
}

/// A set of local dates that are holidays (for time-of-use and for disconnection rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayCalendar {
    dates: BTreeSet<NaiveDate>,
}

impl HolidayCalendar {
    /// A calendar of the given dates.
    pub fn new(dates: impl IntoIterator<Item = NaiveDate>) -> Self {
        HolidayCalendar {
            dates: dates.into_iter().collect(),
        }
    }

    /// Whether `date` is a holiday.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.dates.contains(&date)
    }

    /// The day type of `date`: `Holiday` if listed, else its weekday.
    pub fn day_type(&self, date: NaiveDate) -> DayType {
        if self.contains(date) {
            DayType::Holiday
        } else {
            DayType::Weekday(date.weekday())
        }
    }

    /// Whether `date` is a business day: not Saturday, Sunday or a holiday.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.contains(date)
    }
}

/// Days in the calendar month of `date`.
pub(crate) fn days_in_month(date: NaiveDate) -> i64 {
    let first = date.with_day(1).unwrap_or(date);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.map_or(30, |n| (n - first).num_days())
}

/// The fraction of calendar months covered by the local dates `[start, end)`: the sum over the
/// months touched of (days covered in the month / days in that month). A whole calendar month
/// gives exactly 1; 15 January to 15 February gives 17/31 + 14/28.
pub(crate) fn month_fraction(start: NaiveDate, end: NaiveDate) -> Decimal {
    let mut total = Decimal::ZERO;
    let mut day = start;
    while day < end {
        let month_days = days_in_month(day);
        let first_of_next = day.with_day(1).unwrap_or(day) + Duration::days(month_days);
        let stop = end.min(first_of_next);
        let covered = (stop - day).num_days();
        total += Decimal::from(covered) / Decimal::from(month_days);
        day = stop;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn berlin_dst_days_have_23_and_25_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(day_length_s(tz, d(2026, 3, 29)), 23 * 3600);
        assert_eq!(day_length_s(tz, d(2026, 10, 25)), 25 * 3600);
        assert_eq!(day_length_s(tz, d(2026, 6, 1)), 24 * 3600);
    }

    #[test]
    fn a_day_without_local_midnight_starts_at_its_first_minute() {
        // Chile's spring-forward happens at 00:00 local: 2026-09-06 00:00 does not exist.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = start_of_day(tz, d(2026, 9, 6));
        assert_eq!(
            local(tz, start).time(),
            NaiveTime::from_hms_opt(1, 0, 0).unwrap()
        );
        assert_eq!(day_length_s(tz, d(2026, 9, 6)), 23 * 3600);
    }

    #[test]
    fn month_fractions_sum_exactly() {
        assert_eq!(month_fraction(d(2026, 1, 1), d(2026, 2, 1)), Decimal::ONE);
        assert_eq!(
            month_fraction(d(2026, 1, 1), d(2027, 1, 1)),
            Decimal::from(12)
        );
        let f = month_fraction(d(2026, 1, 15), d(2026, 2, 15));
        assert_eq!(
            f,
            Decimal::from(17) / Decimal::from(31) + Decimal::from(14) / Decimal::from(28)
        );
    }
}
