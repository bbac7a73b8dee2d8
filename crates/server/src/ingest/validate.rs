//! Record validation: value ranges, sane timestamps and monotonic counters per boot. Each
//! refusal is a sentence a person can read in the quarantine view.

use schema::{Body, EnergyCounters, Reading, Record};

use crate::CounterPoint;

/// Limits a record must respect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Server receive time, Unix ms.
    pub received_ms: i64,
    /// Oldest acceptable record time (older raw data would rewrite final rollups).
    pub oldest_ms: i64,
    /// Newest acceptable record time.
    pub newest_ms: i64,
}

fn fmt_ms(t_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t_ms).map_or_else(
        || format!("{t_ms} ms"),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn describe_offset(delta_ms: i64) -> String {
    let s = delta_ms.unsigned_abs() as f64 / 1000.0;
    if s >= 2.0 * 86_400.0 * 365.0 {
        format!("{:.1} years", s / (86_400.0 * 365.25))
    } else if s >= 2.0 * 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else {
        format!("{:.0} s", s)
    }
}

/// Checks what one record says on its own.
pub(crate) fn check_record(r: &Record, b: &Bounds) -> Result<(), String> {
    if r.seq > i64::MAX as u64 {
        return Err(format!(
            "seq {} is above the largest storable seq {}",
            r.seq,
            i64::MAX
        ));
    }
    if r.t_ms > b.newest_ms {
        return Err(format!(
            "timestamp {} is {} in the future of the server clock ({})",
            fmt_ms(r.t_ms),
            describe_offset(r.t_ms - b.received_ms),
            fmt_ms(b.received_ms)
        ));
    }
    if r.t_ms < b.oldest_ms {
        return Err(format!(
            "timestamp {} is {} in the past, older than the raw retention period allows",
            fmt_ms(r.t_ms),
            describe_offset(b.received_ms - r.t_ms)
        ));
    }
    if let Body::Reading(reading) = &r.body {
        check_reading(reading)?;
    }
    Ok(())
}

fn in_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} = {v} is outside {lo} to {hi}"))
    }
}

fn check_reading(r: &Reading) -> Result<(), String> {
    in_range("interval_s", r.interval_s, 0.001, 86_400.0)?;
    in_range("freq_hz", r.freq_hz, 0.0, 1_000.0)?;
    in_range("total.p_w", r.total.p_w, -1e9, 1e9)?;
    if let Some(q) = r.total.q_var {
        in_range("total.q_var", q, -1e9, 1e9)?;
    }
    in_range("total.s_va", r.total.s_va, 0.0, 1e9)?;
    // A little slack above 1: P and S are averaged separately over the interval.
    in_range("total.pf", r.total.pf, -1.01, 1.01)?;
    let c = &r.counters;
    for (name, v) in [
        ("import_wh", c.import_wh),
        ("export_wh", c.export_wh),
        ("q1_varh", c.q1_varh),
        ("q2_varh", c.q2_varh),
        ("q3_varh", c.q3_varh),
        ("q4_varh", c.q4_varh),
    ] {
        in_range(&format!("counters.{name}"), v, 0.0, 1e15)?;
    }
    if r.phases.len() > 3 {
        return Err(format!("{} phases (at most 3)", r.phases.len()));
    }
    for (i, p) in r.phases.iter().enumerate() {
        if r.phases[..i].iter().any(|o| o.phase == p.phase) {
            return Err(format!("phase {:?} appears twice", p.phase));
        }
        let n = |f: &str| format!("phase {:?} {f}", p.phase).to_lowercase();
        in_range(&n("v_rms"), p.v_rms, 0.0, 1e6)?;
        in_range(&n("i_rms"), p.i_rms, 0.0, 1e6)?;
        in_range(&n("p_w"), p.p_w, -1e9, 1e9)?;
        in_range(&n("s_va"), p.s_va, 0.0, 1e9)?;
        in_range(&n("pf"), p.pf, -1.01, 1.01)?;
        for (f, v) in [
            ("q_var", p.q_var.map(|q| (q, -1e9, 1e9))),
            ("v_thd_pct", p.v_thd_pct.map(|q| (q, 0.0, 1e4))),
            ("i_thd_pct", p.i_thd_pct.map(|q| (q, 0.0, 1e4))),
        ] {
            if let Some((v, lo, hi)) = v {
                in_range(&n(f), v, lo, hi)?;
            }
        }
    }
    Ok(())
}

/// Names the first register of `later` below `earlier`'s, with both values.
fn backwards(earlier: &EnergyCounters, later: &EnergyCounters) -> Option<(&'static str, f64, f64)> {
    [
        ("import_wh", earlier.import_wh, later.import_wh),
        ("export_wh", earlier.export_wh, later.export_wh),
        ("q1_varh", earlier.q1_varh, later.q1_varh),
        ("q2_varh", earlier.q2_varh, later.q2_varh),
        ("q3_varh", earlier.q3_varh, later.q3_varh),
        ("q4_varh", earlier.q4_varh, later.q4_varh),
    ]
    .into_iter()
    .find(|&(_, e, l)| l < e)
}

/// Checks that the counters of `readings` (ascending seq, one boot) never go backwards
/// against each other and against the stored neighbours. Returns, per index of `readings`,
/// the reason it is refused.
pub(crate) fn check_monotonic(
    boot_id: u64,
    readings: &[(u64, EnergyCounters)],
    before: Option<CounterPoint>,
    after: Option<CounterPoint>,
) -> Vec<(usize, String)> {
    let mut refused = vec![None; readings.len()];
    let mut last = before.map(|p| (p.seq, p.counters));
    for (i, &(seq, c)) in readings.iter().enumerate() {
        if let Some((lseq, lc)) = last
            && let Some((name, from, to)) = backwards(&lc, &c)
        {
            refused[i] = Some(format!(
                "counter {name} went backwards from {from} at seq {lseq} to {to} at seq {seq} within boot {boot_id} without a new boot_id"
            ));
            continue;
        }
        last = Some((seq, c));
    }
    let mut next = after.map(|p| (p.seq, p.counters));
    for (i, &(seq, c)) in readings.iter().enumerate().rev() {
        if refused[i].is_some() {
            continue;
        }
        if let Some((nseq, nc)) = next
            && let Some((name, from, to)) = backwards(&c, &nc)
        {
            refused[i] = Some(format!(
                "counter {name} is {from} at seq {seq} but already {to} at the later seq {nseq} within boot {boot_id} (counters must not go backwards without a new boot_id)"
            ));
            continue;
        }
        next = Some((seq, c));
    }
    refused
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(import_wh: f64) -> EnergyCounters {
        EnergyCounters {
            import_wh,
            ..Default::default()
        }
    }

    #[test]
    fn a_drop_inside_a_batch_is_refused_and_the_walk_continues() {
        let r = check_monotonic(1, &[(1, c(10.0)), (2, c(5.0)), (3, c(11.0))], None, None);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 1);
        assert!(
            r[0].1
                .contains("import_wh went backwards from 10 at seq 1 to 5 at seq 2")
        );
    }

    #[test]
    fn stored_neighbours_bound_the_batch_on_both_sides() {
        let p = |seq, v| CounterPoint {
            boot_id: 1,
            seq,
            t_ms: 0,
            counters: c(v),
            p_w: 0.0,
        };
        let r = check_monotonic(
            1,
            &[(5, c(3.0)), (6, c(30.0))],
            Some(p(4, 4.0)),
            Some(p(7, 20.0)),
        );
        let idx: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(idx, vec![0, 1]);
        assert!(r[1].1.contains("already 20 at the later seq 7"));
    }

    #[test]
    fn timestamps_years_away_are_described_in_years() {
        let b = Bounds {
            received_ms: 1_700_000_000_000,
            oldest_ms: 1_600_000_000_000,
            newest_ms: 1_700_086_400_000,
        };
        let r = Record {
            seq: 1,
            t_ms: 1_700_000_000_000 + 5 * 365 * 86_400_000,
            body: Body::Heartbeat(schema::Heartbeat {
                uptime_s: 1,
                outbox_records: 0,
            }),
        };
        let why = check_record(&r, &b).unwrap_err();
        assert!(why.contains("5.0 years in the future"), "{why}");
    }
}
