//! Integration tests of the `billing` crate: golden bills for the example tariffs in
//! `testdata/`, property tests, tariff validation errors, and prepaid/postpaid decisions.

mod accounts;
mod errors;
mod golden;
mod properties;
mod rating;

use billing::{BillingInput, Cycle, IntervalReading, Tariff, start_of_day};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;

/// Loads an example tariff from `testdata/`.
pub fn tariff(file: &str) -> Tariff {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Tariff::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Readings of `step_min` minutes from local `start` to local `end` (exclusive) in the tariff's
/// zone; `energy` gets the local start time and returns (import Wh, export Wh).
pub fn readings(
    tariff: &Tariff,
    start: NaiveDate,
    end: NaiveDate,
    step_min: i64,
    energy: impl Fn(NaiveDateTime) -> (u64, u64),
) -> Vec<IntervalReading> {
    let tz = tariff.time_zone();
    let mut t: DateTime<Utc> = start_of_day(tz, start);
    let stop = start_of_day(tz, end);
    let mut out = Vec::new();
    while t < stop {
        let next = (t + Duration::minutes(step_min)).min(stop);
        let (import_wh, export_wh) = energy(t.with_timezone(&tz).naive_local());
        out.push(IntervalReading {
            start: t,
            end: next,
            import_wh,
            export_wh,
        });
        t = next;
    }
    out
}

pub fn input(cycle: Cycle, readings: Vec<IntervalReading>) -> BillingInput {
    BillingInput {
        account: "A-100".into(),
        cycle,
        readings,
        credit_carried_in_wh: 0,
        previous_balance: Decimal::ZERO,
        payments: Decimal::ZERO,
    }
}
