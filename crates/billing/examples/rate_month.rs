//! Times rating one month of 15-minute readings with the example tariffs in `testdata/`
//! (TOU with peak demand, telescopic tiers, flat with a tariff change) and a projection.
//!
//! Run: `cargo run -p billing --example rate_month` (prints one line per case).

use std::time::Instant;

use billing::{BillingInput, Cycle, IntervalReading, Tariff, project, rate_cycle, start_of_day};
use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).ok_or("bad date");
    for (file, start, end) in [
        (
            "us_commercial_tou_demand.toml",
            d(2026, 7, 1)?,
            d(2026, 8, 1)?,
        ),
        ("mx_tarifa1_telescopic.toml", d(2026, 7, 1)?, d(2026, 8, 1)?),
        ("gb_single_rate.toml", d(2026, 3, 15)?, d(2026, 4, 15)?),
    ] {
        let tariff = Tariff::from_toml(&std::fs::read_to_string(format!("{dir}/{file}"))?)?;
        let tz = tariff.time_zone();
        let (mut t, stop) = (start_of_day(tz, start), start_of_day(tz, end));
        let mut readings = Vec::new();
        let mut i: u64 = 0;
        while t < stop {
            let end = t + Duration::minutes(15);
            readings.push(IntervalReading {
                start: t,
                end,
                import_wh: 150 + (i * 7919) % 400,
                export_wh: 0,
            });
            t = end;
            i += 1;
        }
        let n = readings.len();
        let input = BillingInput {
            account: "bench".into(),
            cycle: Cycle::new(start, end),
            readings,
            credit_carried_in_wh: 0,
            previous_balance: Decimal::ZERO,
            payments: Decimal::ZERO,
        };
        let rounds = 50;
        let started = Instant::now();
        let mut total = Decimal::ZERO;
        for _ in 0..rounds {
            total = rate_cycle(&tariff, &input)?.total;
        }
        let per_bill = started.elapsed() / rounds;
        let mut half = input.clone();
        let mid = start_of_day(tz, start) + Duration::days(15);
        half.readings.retain(|r| r.end <= mid);
        let started = Instant::now();
        let projected = project(&tariff, &half, mid)?.projected.total;
        let projection = started.elapsed();
        println!(
            "{file}: {n} readings, bill {total} in {per_bill:?} per bill (mean of {rounds}); projection at mid-cycle {projected} in {projection:?}"
        );
    }
    Ok(())
}
