//! Projected bills: the whole cycle's bill estimated from the consumption so far.
//!
//! Method (same-weekday profile): the complete local days observed so far give, for each weekday
//! and local time-of-day slot, the mean import and export of that slot. Each remaining interval
//! of the cycle (from `as_of`, at the readings' own resolution) is estimated with the mean of its
//! weekday and slot; if that weekday has not been observed yet, with the mean of the slot over all
//! observed days; if no complete day has been observed, with the mean interval of all readings so
//! far. The actual readings plus the estimates are then rated as a final bill, so tiers, demand,
//! time-of-use, netting and taxes apply to the projection exactly as they will to the bill. When
//! `as_of` reaches the cycle's end nothing is estimated and the projection equals the final bill.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};

use crate::bill::{Bill, BillStatus};
use crate::calendar::{local, local_date, start_of_day};
use crate::error::{Error, Result};
use crate::rating::{BillingInput, IntervalReading, bill_to_date, rate};
use crate::tariff::Tariff;

/// A bill to date and the projected bill for the whole cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Charges for the consumption known so far.
    pub to_date: Bill,
    /// The estimated final bill for the cycle.
    pub projected: Bill,
    /// How many intervals were estimated.
    pub estimated_intervals: usize,
    /// One sentence naming the method, for display next to the projection.
    pub method: &'static str,
}

/// The method as shown to customers.
pub const PROJECTION_METHOD: &str = "remaining intervals estimated from the mean of the same weekday and time of day observed so far in this cycle";

/// Mean Wh per slot, accumulated as sums and counts.
#[derive(Default, Clone, Copy)]
struct Mean {
    import_wh: u64,
    export_wh: u64,
    count: u64,
}

impl Mean {
    fn add(&mut self, r: &IntervalReading) {
        self.import_wh += r.import_wh;
        self.export_wh += r.export_wh;
        self.count += 1;
    }

    /// The mean rounded to the nearest Wh (ties up), scaled by `fraction` of an interval.
    fn estimate(&self, num: i64, den: i64) -> (u64, u64) {
        let scale = |sum: u64| {
            let n = sum as u128 * num as u128;
            let d = self.count as u128 * den as u128;
            ((2 * n + d) / (2 * d)) as u64
        };
        (scale(self.import_wh), scale(self.export_wh))
    }
}

/// Projects the whole cycle's bill from the readings known up to `as_of` (see the module docs
/// for the method). The readings must all have the same length.
pub fn project(tariff: &Tariff, input: &BillingInput, as_of: DateTime<Utc>) -> Result<Projection> {
    let to_date = bill_to_date(tariff, input, as_of)?;
    let tz = tariff.time_zone;
    let cycle_end = start_of_day(tz, input.cycle.end);
    let readings = &input.readings;
    let mut estimates = Vec::new();
    if as_of < cycle_end {
        let first = readings.first().ok_or_else(|| {
            Error::readings(
                "readings",
                "a projection needs at least one reading of this cycle",
            )
        })?;
        let step = first.end - first.start;
        if let Some((i, r)) = readings
            .iter()
            .enumerate()
            .find(|(_, r)| r.end - r.start != step)
        {
            return Err(Error::readings(
                format!("readings[{i}] ({})", r.start.format("%Y-%m-%dT%H:%M:%SZ")),
                format!(
                    "a projection needs readings of one length; this one is {} s, the first {} s",
                    (r.end - r.start).num_seconds(),
                    step.num_seconds()
                ),
            ));
        }
        let today = local_date(tz, as_of);
        let slot = |t: DateTime<Utc>| {
            let l = local(tz, t);
            l.hour() * 3600 + l.minute() * 60 + l.second()
        };
        let mut by_weekday: BTreeMap<(u32, u32), Mean> = BTreeMap::new();
        let mut by_slot: BTreeMap<u32, Mean> = BTreeMap::new();
        let mut overall = Mean::default();
        for r in readings {
            overall.add(r);
            // Only complete days make the profile: a partial day would bias its slots by absence.
            let day: NaiveDate = local_date(tz, r.start);
            if day < today {
                by_weekday
                    .entry((day.weekday().num_days_from_monday(), slot(r.start)))
                    .or_default()
                    .add(r);
                by_slot.entry(slot(r.start)).or_default().add(r);
            }
        }
        let step_s = step.num_seconds();
        // Estimates follow the readings' own grid, so they never cross a quarter hour or a window
        // edge that the real readings respect; a first partial interval is prorated.
        let phase = first.start.timestamp().rem_euclid(step_s);
        let mut t = as_of;
        while t < cycle_end {
            let into = (t.timestamp() - phase).rem_euclid(step_s);
            let slot_start = t - Duration::seconds(into);
            let end = (slot_start + step).min(cycle_end);
            let l = local(tz, slot_start);
            let mean = by_weekday
                .get(&(l.date().weekday().num_days_from_monday(), slot(slot_start)))
                .or_else(|| by_slot.get(&slot(slot_start)))
                .copied()
                .unwrap_or(overall);
            let (import_wh, export_wh) = mean.estimate((end - t).num_seconds(), step_s);
            estimates.push(IntervalReading {
                start: t,
                end,
                import_wh,
                export_wh,
            });
            t = end;
        }
    }
    let estimated_intervals = estimates.len();
    let mut all = readings.clone();
    all.extend(estimates);
    let status = BillStatus::Projected { as_of };
    let projected = rate(tariff, input, &all, cycle_end, input.cycle.end, status)?;
    Ok(Projection {
        to_date,
        projected,
        estimated_intervals,
        method: PROJECTION_METHOD,
    })
}
