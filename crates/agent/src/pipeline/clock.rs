//! The time a reading is stamped with: the end of the period it measured, not the moment the
//! pipeline got round to emitting it.
//!
//! A source counts its own time (samples since it started, or a device's poll times). When
//! the machine is busy the pipeline falls behind and catches up in a burst: stamping readings
//! with the system clock at emission would then date the energy of one period a little late and
//! the next one's a little early, so an energy balance between two meters sees energy appear in
//! one interval and vanish from its neighbour. [`SourceClock`] maps source time to the system
//! clock through an anchor set at the first measurement, so a backlog does not move stamps.
//!
//! The anchor follows the system clock where the two part:
//! - source time never stamps a reading in the future: a source ahead of the clock (a replay
//!   paced faster than real time, or an anchor set while the first chunk was late) moves the
//!   anchor back to "now";
//! - a source behind the clock by more than [`SourceClock::MAX_LAG_MS`] (the source stopped,
//!   or cannot keep up) is re-anchored at "now";
//! - within that, the anchor slews towards the clock at [`SourceClock::SLEW`] (500 ppm of source
//!   time, five times a poor crystal's error), so a sample clock that runs slow stays within
//!   milliseconds of the system clock without steps, while a backlog moves the stamps by at most
//!   0.5 ms per second it lasts (a 3 s stall: under 2 ms, against the seconds it would cost).
//!
//! Stamps never go backwards.

/// Maps source time to Unix milliseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceClock {
    /// Unix ms at source time 0.
    anchor_ms: Option<f64>,
    last_source_ms: f64,
    last_stamp_ms: i64,
}

impl SourceClock {
    /// How far source time may lag the system clock before it is re-anchored.
    pub(crate) const MAX_LAG_MS: f64 = 120_000.0;
    /// How fast the anchor slews towards the system clock, per unit of source time.
    pub(crate) const SLEW: f64 = 5e-4;

    /// The Unix ms of source time `source_s`, given the system clock reads `now_ms`.
    pub(crate) fn stamp(&mut self, source_s: f64, now_ms: i64) -> i64 {
        let source_ms = source_s * 1000.0;
        let now = now_ms as f64;
        let anchor = match self.anchor_ms {
            Some(anchor) => {
                let lag = now - (anchor + source_ms);
                let elapsed = (source_ms - self.last_source_ms).max(0.0);
                if !(0.0..=Self::MAX_LAG_MS).contains(&lag) {
                    now - source_ms
                } else {
                    anchor + lag.min(elapsed * Self::SLEW)
                }
            }
            None => now - source_ms,
        };
        self.anchor_ms = Some(anchor);
        self.last_source_ms = source_ms;
        let stamp = (anchor + source_ms).round() as i64;
        self.last_stamp_ms = stamp.max(self.last_stamp_ms);
        self.last_stamp_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_does_not_move_the_stamps() {
        let mut clock = SourceClock::default();
        let t0 = 1_000_000_000i64;
        assert_eq!(clock.stamp(0.2, t0 + 200), t0 + 200);
        // Periods of 1 s emitted on time, then a 3 s stall and a burst: each reading keeps the
        // time its period ended, give or take the slew (0.5 ms per second of backlog).
        let emitted = [
            (1.2, 1_201),
            (2.2, 5_100),
            (3.2, 5_110),
            (4.2, 5_120),
            (5.2, 5_201),
        ];
        for (source_s, at) in emitted {
            let stamp = clock.stamp(source_s, t0 + at);
            let end = t0 + (source_s * 1000.0).round() as i64;
            assert!(
                (stamp - end).abs() <= 3,
                "{source_s} s stamped {}",
                stamp - t0
            );
        }
    }

    #[test]
    fn a_slow_sample_clock_is_followed_without_steps() {
        // The source's crystal runs 200 ppm slow: after a day its time lags by 17 s.
        let mut clock = SourceClock::default();
        let t0 = 1_700_000_000_000i64;
        let mut previous = clock.stamp(0.0, t0);
        for k in 1..=86_400i64 {
            let source_s = k as f64 * (1.0 - 200e-6);
            let now = t0 + k * 1000;
            let stamp = clock.stamp(source_s, now);
            let step = stamp - previous;
            assert!((999..=1001).contains(&step), "step {step} ms at {k} s");
            assert!(now - stamp <= 2, "lag {} ms at {k} s", now - stamp);
            previous = stamp;
        }
    }

    #[test]
    fn a_source_ahead_of_the_clock_is_stamped_now_and_stamps_never_go_back() {
        let mut clock = SourceClock::default();
        let t0 = 1_700_000_000_000i64;
        // A replay paced as fast as possible: 10 s of recording per second.
        assert_eq!(clock.stamp(10.0, t0), t0);
        assert_eq!(clock.stamp(20.0, t0 + 1000), t0 + 1000);
        // The source restarts at 0 (a looped recording): still now, never backwards.
        assert_eq!(clock.stamp(0.0, t0 + 1000), t0 + 1000);
        assert_eq!(clock.stamp(0.5, t0 + 900), t0 + 1000);
    }

    #[test]
    fn a_source_that_stopped_for_minutes_is_re_anchored() {
        let mut clock = SourceClock::default();
        let t0 = 1_700_000_000_000i64;
        assert_eq!(clock.stamp(1.0, t0), t0);
        let later = t0 + 600_000;
        assert_eq!(clock.stamp(2.0, later), later);
        assert_eq!(clock.stamp(3.0, later + 1000), later + 1000);
    }
}
