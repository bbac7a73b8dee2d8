//! A lock-free latency histogram with bounded relative error, for ingest's server-side
//! latency (a delivery reaching ingest → its records on the live stream).
//!
//! Buckets are log-linear over microseconds, in the manner of HDR histograms: values below 64 µs
//! have a bucket each, and every power of two above is split into 32 buckets, so a reported
//! quantile is at most 1/32 (≈ 3 %) above the true value and never below it. Recording is two
//! relaxed atomic adds and a `fetch_max`, cheap enough for every delivery on the writer's path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per power of two above the exact range (`2^SUB_BITS`).
const SUB_BITS: u32 = 5;
const HALF: u64 = 1 << SUB_BITS;
/// Values below this many microseconds have one bucket each.
const EXACT: u64 = HALF * 2;
/// Enough buckets for any `u64` of microseconds (the largest shift is `63 - SUB_BITS`).
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * HALF as usize;

/// Counts of latencies by bucket, with the exact maximum.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let shift = 63 - us.leading_zeros() - SUB_BITS;
    (shift as u64 * HALF + (us >> shift)) as usize
}

/// Largest value, microseconds, that lands in bucket `i`.
fn upper_bound_us(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = i / HALF - 1;
    let mantissa = i % HALF + HALF;
    // The last bucket ends at 2^64 - 1: compute in u128 so its bound does not overflow.
    u64::try_from((u128::from(mantissa + 1) << shift) - 1).unwrap_or(u64::MAX)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    /// Records one latency (saturating at `u64::MAX` microseconds).
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The `q` quantile (`0.0..=1.0`, clamped): the upper bound of the bucket holding the
    /// `ceil(q · count)`-th smallest latency, so never below the true value and at most ≈ 3 %
    /// above it (capped by the exact maximum). Zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                let us = upper_bound_us(i).min(self.max_us.load(Ordering::Relaxed));
                return Duration::from_micros(us);
            }
        }
        self.max()
    }

    /// The largest latency recorded (exact, to the microsecond).
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_bounds_hold_it() {
        let mut probes: Vec<u64> = (0..5_000).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            probes.extend([p.saturating_sub(1), p, p.saturating_add(1)]);
        }
        probes.push(u64::MAX);
        for v in probes {
            let i = index(v);
            assert!(i < BUCKETS, "{v} → {i}");
            assert!(upper_bound_us(i) >= v, "{v} above its bucket {i}");
            if i > 0 {
                assert!(
                    upper_bound_us(i - 1) < v,
                    "{v} belongs to an earlier bucket"
                );
            }
            // Relative width of the bucket: at most 1/32.
            let width = upper_bound_us(i) - if i > 0 { upper_bound_us(i - 1) } else { 0 };
            assert!(
                width as f64 <= (v as f64 / 32.0).max(1.0),
                "{v}: width {width}"
            );
        }
    }

    #[test]
    fn quantiles_are_within_three_percent_above_the_truth() {
        let h = LatencyHistogram::new();
        // 1 ms … 1000 ms: p50 is 500 ms, p99 990 ms, max 1000 ms.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 1000);
        for (q, truth_ms) in [(0.5, 500.0), (0.99, 990.0), (0.001, 1.0)] {
            let got = h.quantile(q).as_secs_f64() * 1e3;
            assert!(
                got >= truth_ms && got <= truth_ms * 1.032,
                "q {q}: {got} ms against {truth_ms} ms"
            );
        }
        assert_eq!(h.quantile(1.0), Duration::from_millis(1000));
        assert_eq!(h.max(), Duration::from_millis(1000));
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        assert_eq!(h.count(), 0);
    }
}
