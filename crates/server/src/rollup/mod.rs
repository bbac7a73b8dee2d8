//! Rollups: energy per 15 minutes, local hour, local day and local month, computed from
//! counter differences (DESIGN §3.3, §3.5).
//!
//! Rules:
//! - The energy of an interval is the difference of the monotonic counters of two consecutive
//!   stored readings of the same boot. A lost reading therefore loses no energy: the next
//!   difference spans both intervals.
//! - The difference is attributed to the bucket containing the *later* reading's end time
//!   minus 1 ms (a reading stamped 10:15:00 closes the 10:00–10:15 interval).
//! - The first stored reading of a boot is a baseline only: a new `boot_id` means the counters
//!   were reset, and that jump is never counted as consumption (nor as a negative one).
//! - Buckets are aligned in the meter's IANA time zone: an hour in Asia/Kolkata starts at
//!   :30 UTC, a day in Europe/Berlin lasts 23 hours in March and 25 in October, and the two
//!   02:00 hours of the autumn change are two different buckets (keyed by their UTC start).
//! - Each coarser level is the sum of the one below (hour ← 15 min, day ← hour, month ← day).

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike,
};
use chrono_tz::Tz;
use schema::{EnergyCounters, MeterId};

use crate::store::{counters_array, counters_from};
use crate::{Error, Resolution, Rollup, RollupInputs, RollupLevel, RollupUpdate, Store};

/// Start (Unix ms UTC) of the `resolution` bucket that contains `t_ms`, in `tz`.
pub fn bucket_start(resolution: Resolution, tz: Tz, t_ms: i64) -> i64 {
    let Some(utc) = DateTime::from_timestamp_millis(t_ms) else {
        return t_ms;
    };
    let local = utc.with_timezone(&tz).naive_local();
    let truncated = match resolution {
        Resolution::Min15 => local
            .date()
            .and_hms_opt(local.hour(), local.minute() / 15 * 15, 0),
        Resolution::Hour => local.date().and_hms_opt(local.hour(), 0, 0),
        Resolution::Day => local.date().and_hms_opt(0, 0, 0),
        Resolution::Month => local
            .date()
            .with_day(1)
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
    };
    let Some(truncated) = truncated else {
        return t_ms;
    };
    resolve(tz, truncated, Some(t_ms))
}

/// Start of the bucket after the one starting at `start_ms`.
pub fn next_bucket_start(resolution: Resolution, tz: Tz, start_ms: i64) -> i64 {
    match resolution {
        // Fixed lengths in UTC: a local quarter hour or hour is always 15 or 60 real minutes
        // for zones whose DST shift is a whole hour (all but Lord Howe's 30 minutes).
        Resolution::Min15 => start_ms + 900_000,
        Resolution::Hour => start_ms + 3_600_000,
        Resolution::Day | Resolution::Month => {
            let Some(utc) = DateTime::from_timestamp_millis(start_ms) else {
                return start_ms + 86_400_000;
            };
            let date = utc.with_timezone(&tz).date_naive();
            let next: Option<NaiveDate> = if resolution == Resolution::Day {
                date.succ_opt()
            } else if date.month() == 12 {
                NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
            };
            match next.and_then(|d| d.and_hms_opt(0, 0, 0)) {
                Some(midnight) => resolve(tz, midnight, None),
                None => start_ms + 86_400_000,
            }
        }
    }
}

/// The UTC instant of a local time. Ambiguous (autumn) times take the latest instant not
/// after `not_after` (or the earliest); times in a spring gap move forward to the first
/// local time that exists.
fn resolve(tz: Tz, local: NaiveDateTime, not_after: Option<i64>) -> i64 {
    let mut candidate = local;
    for _ in 0..=180 {
        match tz.from_local_datetime(&candidate) {
            LocalResult::Single(dt) => return dt.timestamp_millis(),
            LocalResult::Ambiguous(early, late) => {
                let (e, l) = (early.timestamp_millis(), late.timestamp_millis());
                return match not_after {
                    Some(t) if l <= t => l,
                    _ => e,
                };
            }
            LocalResult::None => candidate += Duration::minutes(1),
        }
    }
    local.and_utc().timestamp_millis()
}

/// Quarter-hour rollups of `inputs` (only buckets that some reading ends in).
pub fn quarter_hours(inputs: &RollupInputs, tz: Tz) -> Vec<Rollup> {
    let mut last: BTreeMap<u64, [f64; 6]> = inputs
        .baselines
        .iter()
        .map(|p| (p.boot_id, counters_array(&p.counters)))
        .collect();
    let mut buckets: BTreeMap<i64, Rollup> = BTreeMap::new();
    for p in &inputs.in_range {
        let now = counters_array(&p.counters);
        let mut delta = [0.0; 6];
        if let Some(prev) = last.get(&p.boot_id) {
            for ((d, n), p) in delta.iter_mut().zip(now).zip(prev) {
                // Ingest quarantines counters that go backwards; clamp anyway so a bad row
                // can never subtract energy.
                *d = (n - p).max(0.0);
            }
        }
        last.insert(p.boot_id, now);
        let start = bucket_start(Resolution::Min15, tz, p.t_ms - 1);
        let b = buckets.entry(start).or_insert_with(|| Rollup {
            resolution: Resolution::Min15,
            start_ms: start,
            end_ms: next_bucket_start(Resolution::Min15, tz, start),
            energy: EnergyCounters::default(),
            readings: 0,
            max_p_w: None,
        });
        let mut e = counters_array(&b.energy);
        for (x, d) in e.iter_mut().zip(delta) {
            *x += d;
        }
        b.energy = counters_from(e);
        b.readings += 1;
        b.max_p_w = Some(b.max_p_w.map_or(p.p_w, |m| m.max(p.p_w)));
    }
    buckets.into_values().collect()
}

/// Sums `children` into `level` buckets.
pub fn aggregate(children: &[Rollup], level: Resolution, tz: Tz) -> Vec<Rollup> {
    let mut buckets: BTreeMap<i64, Rollup> = BTreeMap::new();
    for c in children {
        let start = bucket_start(level, tz, c.start_ms);
        let b = buckets.entry(start).or_insert_with(|| Rollup {
            resolution: level,
            start_ms: start,
            end_ms: next_bucket_start(level, tz, start),
            energy: EnergyCounters::default(),
            readings: 0,
            max_p_w: None,
        });
        let (mut e, ce) = (counters_array(&b.energy), counters_array(&c.energy));
        for (x, c) in e.iter_mut().zip(ce) {
            *x += c;
        }
        b.energy = counters_from(e);
        b.readings += c.readings;
        b.max_p_w = match (b.max_p_w, c.max_p_w) {
            (Some(a), Some(x)) => Some(a.max(x)),
            (a, x) => a.or(x),
        };
    }
    buckets.into_values().collect()
}

/// Computes (reading only) the new rows of every level for readings of `meter` ending in
/// `[from_ms, to_ms]`. A coarser level sums the stored children outside the recomputed span
/// and the new children inside it, so all levels can be written in one transaction.
pub async fn plan(
    store: &dyn Store,
    meter: &MeterId,
    tz: Tz,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RollupLevel>, Error> {
    let mut lo = bucket_start(Resolution::Min15, tz, from_ms - 1);
    let mut hi = next_bucket_start(
        Resolution::Min15,
        tz,
        bucket_start(Resolution::Min15, tz, to_ms.max(from_ms) - 1),
    );
    let inputs = store.rollup_inputs(meter, lo, hi).await?;
    let mut levels = vec![RollupLevel {
        resolution: Resolution::Min15,
        from_ms: lo,
        to_ms: hi,
        rows: quarter_hours(&inputs, tz),
    }];
    for pair in Resolution::ALL.windows(2) {
        let (child, level) = (pair[0], pair[1]);
        let (child_lo, child_hi) = (lo, hi);
        lo = bucket_start(level, tz, lo);
        hi = next_bucket_start(level, tz, bucket_start(level, tz, hi - 1));
        let mut children: Vec<Rollup> = store
            .rollups(meter, child, lo, hi)
            .await?
            .into_iter()
            .filter(|c| c.start_ms < child_lo || c.start_ms >= child_hi)
            .collect();
        children.extend(
            levels
                .last()
                .expect("the finest level")
                .rows
                .iter()
                .cloned(),
        );
        children.sort_by_key(|c| c.start_ms);
        levels.push(RollupLevel {
            resolution: level,
            from_ms: lo,
            to_ms: hi,
            rows: aggregate(&children, level, tz),
        });
    }
    Ok(levels)
}

/// Most meters whose rollups one transaction settles. Small, because ingest refreshes beside
/// its writer: on SQLite a refresh transaction holds the one write connection, so the ingest
/// commits queued behind it wait for at most one chunk (an fsync per 16 meters is cheap).
const REFRESH_CHUNK: usize = 16;

/// Recomputes the rollups of every dirty range the store recorded (after a crash too) and
/// clears them, a chunk of meters per transaction. Returns how many ranges were refreshed.
pub async fn refresh_dirty(store: &dyn Store) -> Result<usize, Error> {
    let ranges = store.dirty_ranges().await?;
    for chunk in ranges.chunks(REFRESH_CHUNK) {
        let mut updates = Vec::with_capacity(chunk.len());
        for range in chunk {
            let tz = match store.meter(&range.meter).await? {
                Some(m) => m.tz()?,
                None => Tz::UTC,
            };
            updates.push(RollupUpdate {
                meter: range.meter.clone(),
                levels: plan(store, &range.meter, tz, range.from_ms, range.to_ms).await?,
                clear: Some(range.clone()),
            });
        }
        store.apply_rollups(&updates).await?;
    }
    Ok(ranges.len())
}

/// The retention job: brings every rollup up to date, then deletes raw readings older than
/// `keep_raw_ms` whose rollups exist (rollups themselves are kept). Run it periodically; with
/// several server instances, under one PostgreSQL advisory lock (DESIGN §5).
pub async fn enforce_retention(
    store: &dyn Store,
    keep_raw_ms: i64,
    now_ms: i64,
) -> Result<crate::RetentionReport, Error> {
    refresh_dirty(store).await?;
    store.apply_retention(now_ms - keep_raw_ms).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{Asia::Kolkata, Europe::Berlin};

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn kolkata_hours_start_at_half_past_utc() {
        let t = utc("2026-03-10T10:10:00Z"); // 15:40 IST
        assert_eq!(
            bucket_start(Resolution::Hour, Kolkata, t),
            utc("2026-03-10T09:30:00Z")
        );
        assert_eq!(
            bucket_start(Resolution::Day, Kolkata, t),
            utc("2026-03-09T18:30:00Z")
        );
        assert_eq!(
            bucket_start(Resolution::Min15, Kolkata, t),
            utc("2026-03-10T10:00:00Z")
        );
    }

    #[test]
    fn berlin_days_are_23_and_25_hours_on_dst_changes() {
        let spring = bucket_start(Resolution::Day, Berlin, utc("2026-03-29T12:00:00Z"));
        assert_eq!(spring, utc("2026-03-28T23:00:00Z"));
        assert_eq!(
            next_bucket_start(Resolution::Day, Berlin, spring) - spring,
            23 * 3_600_000
        );
        let autumn = bucket_start(Resolution::Day, Berlin, utc("2026-10-25T12:00:00Z"));
        assert_eq!(autumn, utc("2026-10-24T22:00:00Z"));
        assert_eq!(
            next_bucket_start(Resolution::Day, Berlin, autumn) - autumn,
            25 * 3_600_000
        );
    }

    #[test]
    fn the_two_autumn_two_oclock_hours_are_different_buckets() {
        // 02:30 CEST = 00:30 UTC and 02:30 CET = 01:30 UTC.
        let first = bucket_start(Resolution::Hour, Berlin, utc("2026-10-25T00:30:00Z"));
        let second = bucket_start(Resolution::Hour, Berlin, utc("2026-10-25T01:30:00Z"));
        assert_eq!(first, utc("2026-10-25T00:00:00Z"));
        assert_eq!(second, utc("2026-10-25T01:00:00Z"));
    }

    #[test]
    fn months_follow_the_local_calendar() {
        let start = bucket_start(Resolution::Month, Berlin, utc("2026-11-21T12:00:00Z"));
        assert_eq!(start, utc("2026-10-31T23:00:00Z"));
        assert_eq!(
            next_bucket_start(Resolution::Month, Berlin, start),
            utc("2026-11-30T23:00:00Z")
        );
        let dec = bucket_start(Resolution::Month, Berlin, utc("2026-12-31T23:30:00Z"));
        assert_eq!(dec, utc("2026-12-31T23:00:00Z")); // already January 1st in Berlin
    }
}
