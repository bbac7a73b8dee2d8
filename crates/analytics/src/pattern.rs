//! Consumption-pattern features and the unsupervised theft score (DESIGN §3.6, issue 7 item 3).
//!
//! Every meter's history is reduced to weekly *indicator* series: level relative to the peer
//! group's median of the same week (which removes season and weather), share of near-zero days,
//! variation between the days of a week, match of the weekly pattern with the peers', day-to-day
//! roughness and, with intraday data, variation within the day, match of the daily load profile
//! with the peers' and interval-to-interval roughness. Each series gives three features oriented
//! so that larger is more suspicious: the largest *sustained* shift to the end of the history
//! (a theft that started and continues), its significance, and the recent value against the
//! peers. Missing data is never read as a signal: indicators are computed from observed days
//! only, a week needs enough observed days to count, and meters with too little data are
//! excluded with a reason instead of being scored on nothing.

use std::collections::HashMap;

use crate::history::{DayNumber, Diagnostic, MeterHistory, format_day};

/// Tuning of feature extraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatternConfig {
    /// Meters with fewer observed days are excluded (a reason is given).
    pub min_observed_days: usize,
    /// A week's indicators need this many observed days.
    pub min_days_per_week: usize,
    /// Number of most recent valid weeks compared with the peers.
    pub recent_weeks: usize,
    /// Days below this energy count as near-zero (also at least 2 % of the meter's 90th
    /// percentile day, so a large customer's idle day is not "zero").
    pub near_zero_kwh_per_day: f32,
}

impl Default for PatternConfig {
    fn default() -> Self {
        Self {
            min_observed_days: 28,
            min_days_per_week: 4,
            recent_weeks: 8,
            near_zero_kwh_per_day: 0.05,
        }
    }
}

/// The weekly indicators. `decrease` says which direction is suspicious.
#[derive(Debug, Clone, Copy)]
struct IndicatorSpec {
    name: &'static str,
    decrease: bool,
    /// Smallest spread used when standardising the shift and the recent value (keeps a feature
    /// that is constant across honest meters from dividing by zero).
    floor: f32,
}

const INDICATORS: [IndicatorSpec; 8] = [
    IndicatorSpec {
        name: "level",
        decrease: true,
        floor: 0.1,
    },
    IndicatorSpec {
        name: "zero_days",
        decrease: false,
        floor: 0.05,
    },
    IndicatorSpec {
        name: "week_variation",
        decrease: true,
        floor: 0.03,
    },
    IndicatorSpec {
        name: "week_pattern",
        decrease: true,
        floor: 0.1,
    },
    IndicatorSpec {
        name: "day_to_day",
        decrease: false,
        floor: 0.03,
    },
    IndicatorSpec {
        name: "day_variation",
        decrease: true,
        floor: 0.03,
    },
    IndicatorSpec {
        name: "day_profile",
        decrease: true,
        floor: 0.05,
    },
    IndicatorSpec {
        name: "interval_roughness",
        decrease: false,
        floor: 0.03,
    },
];
const N_IND: usize = INDICATORS.len();

/// Number of features per meter: three per indicator plus the longest near-zero run.
pub const FEATURE_COUNT: usize = 3 * N_IND + 1;
const ZERO_RUN: usize = 3 * N_IND;

/// Feature names, in the order of [`MeterFeatures::values`] (also the model file's header).
pub fn feature_names() -> Vec<String> {
    let mut names = Vec::with_capacity(FEATURE_COUNT);
    for ind in INDICATORS {
        names.push(format!("{}_shift", ind.name));
        names.push(format!("{}_shift_t", ind.name));
        names.push(format!("{}_recent", ind.name));
    }
    names.push("zero_run_days".into());
    names
}

/// The largest sustained shift of one indicator (oriented: positive is suspicious).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// Mean before minus mean after, in the indicator's own unit.
    pub delta: f32,
    /// `delta` over its standard error.
    pub t: f32,
    /// First day of the shifted segment.
    pub start_day: DayNumber,
    /// Mean of the indicator before and after (not oriented).
    pub before: f32,
    pub after: f32,
}

/// One meter's features, with the context needed to explain them.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterFeatures {
    pub meter_id: String,
    /// Oriented feature values (larger is more suspicious); `NaN` when not computable (for
    /// example intraday features on daily data).
    pub values: [f32; FEATURE_COUNT],
    shifts: [Option<Shift>; N_IND],
    recent: [f32; N_IND],
    zero_run_start: DayNumber,
    /// Share of the history's days that were observed.
    pub coverage: f32,
}

impl MeterFeatures {
    /// A feature vector without explanation context (unit tests of the models).
    #[cfg(test)]
    pub(crate) fn for_tests(meter_id: String, values: [f32; FEATURE_COUNT]) -> Self {
        Self {
            meter_id,
            values,
            shifts: [None; N_IND],
            recent: [f32::NAN; N_IND],
            zero_run_start: 0,
            coverage: 1.0,
        }
    }
}

/// Features of a batch of meters plus the meters that could not be scored.
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    pub meters: Vec<MeterFeatures>,
    /// Meters excluded, each with the reason.
    pub excluded: Vec<Diagnostic>,
}

const EPS_KWH: f32 = 0.05;

/// Daily totals; an intraday day counts when at least 80 % of its intervals were read (the total
/// is then scaled up, which assumes the missing intervals looked like the rest of the day).
fn daily_totals(h: &MeterHistory) -> Vec<f32> {
    let ipd = h.intervals_per_day.max(1) as usize;
    if ipd == 1 {
        return h.kwh.clone();
    }
    h.kwh
        .chunks_exact(ipd)
        .map(|day| {
            let (n, sum) = day
                .iter()
                .filter(|v| !v.is_nan())
                .fold((0usize, 0.0f32), |(n, s), v| (n + 1, s + v));
            if n * 5 >= ipd * 4 {
                sum * ipd as f32 / n as f32
            } else {
                f32::NAN
            }
        })
        .collect()
}

fn week_of(day: DayNumber) -> i32 {
    // 1970-01-01 was a Thursday; +3 makes weeks start on Monday.
    (day + 3).div_euclid(7)
}

fn weekday(day: DayNumber) -> usize {
    (day + 3).rem_euclid(7) as usize
}

fn median(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let pairs = a.iter().zip(b).filter(|(x, y)| !x.is_nan() && !y.is_nan());
    let (mut n, mut sa, mut sb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in pairs.clone() {
        n += 1.0;
        sa += f64::from(*x);
        sb += f64::from(*y);
    }
    if n < 3.0 {
        return f32::NAN;
    }
    let (ma, mb) = (sa / n, sb / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        let (dx, dy) = (f64::from(*x) - ma, f64::from(*y) - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    if va <= 1e-12 || vb <= 1e-12 {
        // A flat series has no shape; it matches nothing.
        return 0.0;
    }
    (cov / (va * vb).sqrt()) as f32
}

/// Weekly means per absolute week, `NaN` when the week has too few observed days.
fn weekly_levels(first_day: DayNumber, daily: &[f32], min_days: usize) -> (i32, Vec<f32>) {
    let first_week = week_of(first_day);
    let last_week = week_of(first_day + daily.len().max(1) as i32 - 1);
    let mut sums = vec![(0.0f32, 0usize); (last_week - first_week + 1) as usize];
    for (t, v) in daily.iter().enumerate() {
        if !v.is_nan() {
            let w = (week_of(first_day + t as i32) - first_week) as usize;
            sums[w].0 += v;
            sums[w].1 += 1;
        }
    }
    let levels = sums
        .iter()
        .map(|&(s, n)| {
            if n >= min_days {
                s / n as f32
            } else {
                f32::NAN
            }
        })
        .collect();
    (first_week, levels)
}

/// What the peer group looks like: the median weekly level, the median weekly pattern and, per
/// resolution, the median normalised daily load profile.
#[derive(Debug, Clone)]
struct Peers {
    first_week: i32,
    level: Vec<f32>,
    week_pattern: [f32; 7],
    day_profile: HashMap<u32, Vec<f32>>,
}

impl Peers {
    fn level(&self, week: i32) -> f32 {
        let i = week - self.first_week;
        if i < 0 {
            f32::NAN
        } else {
            self.level.get(i as usize).copied().unwrap_or(f32::NAN)
        }
    }
}

fn meter_week_pattern(first_day: DayNumber, daily: &[f32], weekly: &(i32, Vec<f32>)) -> [f32; 7] {
    let mut sums = [(0.0f32, 0u32); 7];
    for (t, v) in daily.iter().enumerate() {
        let day = first_day + t as i32;
        let level = weekly.1[(week_of(day) - weekly.0) as usize];
        if !v.is_nan() && level > EPS_KWH {
            let d = weekday(day);
            sums[d].0 += v / level;
            sums[d].1 += 1;
        }
    }
    sums.map(|(s, n)| if n > 0 { s / n as f32 } else { f32::NAN })
}

fn meter_day_profile(h: &MeterHistory) -> Vec<f32> {
    let ipd = h.intervals_per_day as usize;
    let mut sums = vec![(0.0f32, 0u32); ipd];
    for day in h.kwh.chunks_exact(ipd) {
        let (n, s) = day
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0usize, 0.0f32), |(n, s), v| (n + 1, s + v));
        if n * 5 < ipd * 4 || s <= 0.0 {
            continue;
        }
        let mean = s / n as f32;
        for (slot, v) in day.iter().enumerate() {
            if !v.is_nan() {
                sums[slot].0 += v / mean;
                sums[slot].1 += 1;
            }
        }
    }
    sums.iter()
        .map(|&(s, n)| if n > 0 { s / n as f32 } else { f32::NAN })
        .collect()
}

fn build_peers(
    histories: &[&MeterHistory],
    daily: &[Vec<f32>],
    weekly: &[(i32, Vec<f32>)],
) -> Peers {
    let first_week = weekly.iter().map(|w| w.0).min().unwrap_or(0);
    let last_week = weekly
        .iter()
        .map(|w| w.0 + w.1.len() as i32 - 1)
        .max()
        .unwrap_or(0);
    let n_weeks = (last_week - first_week + 1).max(0) as usize;
    let mut per_week: Vec<Vec<f32>> = vec![Vec::new(); n_weeks];
    for (fw, levels) in weekly {
        for (i, l) in levels.iter().enumerate() {
            if !l.is_nan() {
                per_week[(fw - first_week) as usize + i].push(*l);
            }
        }
    }
    let level = per_week.iter_mut().map(|v| median(v)).collect();
    let mut per_day: [Vec<f32>; 7] = Default::default();
    for ((h, d), w) in histories.iter().zip(daily).zip(weekly) {
        for (i, p) in meter_week_pattern(h.first_day, d, w).iter().enumerate() {
            if !p.is_nan() {
                per_day[i].push(*p);
            }
        }
    }
    let week_pattern = std::array::from_fn(|i| median(&mut per_day[i]));
    let mut profiles: HashMap<u32, Vec<Vec<f32>>> = HashMap::new();
    for h in histories.iter().filter(|h| h.intervals_per_day > 1) {
        let p = meter_day_profile(h);
        let slots = profiles
            .entry(h.intervals_per_day)
            .or_insert_with(|| vec![Vec::new(); p.len()]);
        for (slot, v) in p.iter().enumerate() {
            if !v.is_nan() {
                slots[slot].push(*v);
            }
        }
    }
    let day_profile = profiles
        .into_iter()
        .map(|(ipd, mut s)| (ipd, s.iter_mut().map(|v| median(v)).collect()))
        .collect();
    Peers {
        first_week,
        level,
        week_pattern,
        day_profile,
    }
}

/// Robust noise level of a series from its first differences (a single step barely moves it).
fn diff_sigma(series: &[f32]) -> f32 {
    let valid: Vec<f32> = series.iter().copied().filter(|v| !v.is_nan()).collect();
    let mut diffs: Vec<f32> = valid.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    // MAD of differences of white noise: sigma * sqrt(2) * 0.6745.
    median(&mut diffs) / (0.6745 * std::f32::consts::SQRT_2)
}

/// Largest sustained shift to the end of the series in the suspicious direction, with at least
/// `min_side` valid weeks on both sides.
fn sustained_shift(
    series: &[f32],
    first_week: i32,
    decrease: bool,
    floor: f32,
    min_side: usize,
) -> Option<Shift> {
    let idx: Vec<usize> = (0..series.len()).filter(|&i| !series[i].is_nan()).collect();
    let n = idx.len();
    if n < 2 * min_side {
        return None;
    }
    let sign = if decrease { 1.0 } else { -1.0 };
    let total: f64 = idx.iter().map(|&i| f64::from(series[i])).sum();
    let sigma = f64::from(diff_sigma(series).max(floor * 0.5));
    let mut before = 0.0f64;
    let mut best: Option<Shift> = None;
    for (k, &i) in idx.iter().enumerate().take(n - min_side) {
        before += f64::from(series[i]);
        let n1 = k + 1;
        if n1 < min_side {
            continue;
        }
        let n2 = n - n1;
        let mb = before / n1 as f64;
        let ma = (total - before) / n2 as f64;
        let delta = sign * (mb - ma);
        let t = delta / (sigma * (1.0 / n1 as f64 + 1.0 / n2 as f64).sqrt());
        if best.is_none_or(|b| t > f64::from(b.t)) {
            let start_week = first_week + idx[k + 1] as i32;
            best = Some(Shift {
                delta: delta as f32,
                t: t as f32,
                start_day: start_week * 7 - 3,
                before: mb as f32,
                after: ma as f32,
            });
        }
    }
    best
}

/// Weekly indicator series for one meter (rows: indicators, columns: weeks from `first_week`).
fn indicator_series(
    h: &MeterHistory,
    daily: &[f32],
    weekly: &(i32, Vec<f32>),
    peers: &Peers,
    near_zero: f32,
    cfg: &PatternConfig,
) -> Vec<[f32; N_IND]> {
    let (first_week, ref levels) = *weekly;
    let ipd = h.intervals_per_day as usize;
    let peer_profile = peers.day_profile.get(&h.intervals_per_day);
    let mut out = vec![[f32::NAN; N_IND]; levels.len()];
    let offset = (h.first_day + 3).rem_euclid(7) as usize;
    // Days of week w (relative) are t in [w*7 - offset, w*7 - offset + 7).
    for (w, row) in out.iter_mut().enumerate() {
        let start = (w * 7) as isize - offset as isize;
        let days: Vec<(usize, f32)> = (start.max(0)..(start + 7).min(daily.len() as isize))
            .map(|t| (t as usize, daily[t as usize]))
            .filter(|(_, v)| !v.is_nan())
            .collect();
        if days.len() < cfg.min_days_per_week {
            continue;
        }
        let mean = levels[w];
        let peer = peers.level(first_week + w as i32);
        row[0] = ((mean + EPS_KWH) / (peer + EPS_KWH)).ln();
        row[1] = days.iter().filter(|(_, v)| *v < near_zero).count() as f32 / days.len() as f32;
        if mean > near_zero {
            let var = days.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f32>() / days.len() as f32;
            row[2] = var.sqrt() / mean;
            let mut own = [f32::NAN; 7];
            for &(t, v) in &days {
                own[weekday(h.first_day + t as i32)] = v / mean;
            }
            row[3] = correlation(&own, &peers.week_pattern);
        }
        let mut rough = (0.0f32, 0u32);
        for pair in days.windows(2) {
            if pair[1].0 == pair[0].0 + 1 {
                rough.0 += ((pair[1].1 + EPS_KWH) / (pair[0].1 + EPS_KWH)).ln().abs();
                rough.1 += 1;
            }
        }
        if rough.1 > 0 {
            row[4] = rough.0 / rough.1 as f32;
        }
        if ipd > 1 {
            let mut cvs = Vec::with_capacity(7);
            let mut roughs = Vec::with_capacity(7);
            let mut profile = vec![(0.0f32, 0u32); ipd];
            let mut profile_days = 0u32;
            for &(t, _) in &days {
                // Days in `days` have at least 80 % of their intervals (see `daily_totals`);
                // the statistics below use the intervals that were read and nothing else.
                let day = &h.kwh[t * ipd..(t + 1) * ipd];
                let (n, sum) = day
                    .iter()
                    .filter(|v| !v.is_nan())
                    .fold((0usize, 0.0f32), |(n, s), v| (n + 1, s + v));
                let m = sum / n.max(1) as f32;
                if n < 2 || m <= EPS_KWH / ipd as f32 {
                    continue;
                }
                let var = day
                    .iter()
                    .filter(|v| !v.is_nan())
                    .map(|v| (v - m).powi(2))
                    .sum::<f32>()
                    / n as f32;
                cvs.push(var.sqrt() / m);
                let (mut r, mut pairs) = (0.0f32, 0u32);
                for p in day.windows(2).filter(|p| !p[0].is_nan() && !p[1].is_nan()) {
                    r += (p[1] - p[0]).abs();
                    pairs += 1;
                }
                if pairs > 0 {
                    roughs.push(r / (pairs as f32 * m));
                }
                for (p, v) in profile.iter_mut().zip(day).filter(|(_, v)| !v.is_nan()) {
                    p.0 += v / m;
                    p.1 += 1;
                }
                profile_days += 1;
            }
            let profile: Vec<f32> = profile
                .iter()
                .map(|&(s, n)| if n > 0 { s / n as f32 } else { f32::NAN })
                .collect();
            if profile_days >= 3 {
                row[5] = median(&mut cvs);
                row[7] = median(&mut roughs);
                if let Some(peer) = peer_profile {
                    row[6] = correlation(&profile, peer);
                }
            }
        }
    }
    out
}

fn longest_near_zero_run(
    first_day: DayNumber,
    daily: &[f32],
    near_zero: f32,
) -> (usize, DayNumber) {
    let (mut best, mut best_start, mut run, mut start) = (0usize, first_day, 0usize, first_day);
    for (t, v) in daily.iter().enumerate() {
        if v.is_nan() {
            // Missing days neither extend nor break a run: we do not know what happened.
            continue;
        }
        if *v < near_zero {
            if run == 0 {
                start = first_day + t as i32;
            }
            run += 1;
            if run > best {
                best = run;
                best_start = start;
            }
        } else {
            run = 0;
        }
    }
    (best, best_start)
}

/// Extracts the features of every meter with enough data.
pub fn extract_features(histories: &[MeterHistory], cfg: &PatternConfig) -> FeatureSet {
    let mut excluded = Vec::new();
    let mut kept = Vec::with_capacity(histories.len());
    let mut daily = Vec::with_capacity(histories.len());
    for h in histories {
        let d = daily_totals(h);
        let observed = d.iter().filter(|v| !v.is_nan()).count();
        if observed < cfg.min_observed_days {
            excluded.push(Diagnostic {
                meter_id: Some(h.meter_id.clone()),
                message: format!(
                    "only {observed} observed day(s), at least {} needed; not scored",
                    cfg.min_observed_days
                ),
            });
            continue;
        }
        kept.push(h);
        daily.push(d);
    }
    let weekly: Vec<(i32, Vec<f32>)> = kept
        .iter()
        .zip(&daily)
        .map(|(h, d)| weekly_levels(h.first_day, d, cfg.min_days_per_week))
        .collect();
    let peers = build_peers(&kept, &daily, &weekly);
    let mut meters = Vec::with_capacity(kept.len());
    for ((h, d), w) in kept.iter().zip(&daily).zip(&weekly) {
        meters.push(meter_features(h, d, w, &peers, cfg));
    }
    FeatureSet { meters, excluded }
}

fn meter_features(
    h: &MeterHistory,
    daily: &[f32],
    weekly: &(i32, Vec<f32>),
    peers: &Peers,
    cfg: &PatternConfig,
) -> MeterFeatures {
    let mut observed: Vec<f32> = daily.iter().copied().filter(|v| !v.is_nan()).collect();
    let p90 = if observed.is_empty() {
        0.0
    } else {
        let at = (observed.len() * 9 / 10).min(observed.len() - 1);
        *observed.select_nth_unstable_by(at, f32::total_cmp).1
    };
    let near_zero = cfg.near_zero_kwh_per_day.max(0.02 * p90);
    let series = indicator_series(h, daily, weekly, peers, near_zero, cfg);
    let mut values = [f32::NAN; FEATURE_COUNT];
    let mut shifts = [None; N_IND];
    let mut recent = [f32::NAN; N_IND];
    for (j, spec) in INDICATORS.iter().enumerate() {
        let column: Vec<f32> = series.iter().map(|row| row[j]).collect();
        if let Some(s) = sustained_shift(&column, weekly.0, spec.decrease, spec.floor, 4) {
            values[3 * j] = s.delta;
            values[3 * j + 1] = s.t;
            shifts[j] = Some(s);
        }
        let mut last: Vec<f32> = column
            .iter()
            .rev()
            .copied()
            .filter(|v| !v.is_nan())
            .take(cfg.recent_weeks)
            .collect();
        let r = median(&mut last);
        recent[j] = r;
        values[3 * j + 2] = if spec.decrease { -r } else { r };
    }
    let (run, run_start) = longest_near_zero_run(h.first_day, daily, near_zero);
    values[ZERO_RUN] = run as f32;
    MeterFeatures {
        meter_id: h.meter_id.clone(),
        values,
        shifts,
        recent,
        zero_run_start: run_start,
        coverage: observed.len() as f32 / daily.len().max(1) as f32,
    }
}

/// A meter's theft score with the reasons that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct TheftScore {
    pub meter_id: String,
    /// In [0, 1]; only the order is meaningful across meters.
    pub score: f64,
    /// Human-readable reasons, strongest first.
    pub reasons: Vec<String>,
}

/// Weights of the unsupervised combination: the sustained shifts carry the evidence; the
/// recent-vs-peers terms count less because households differ legitimately in size and habits.
fn unsupervised_weight(feature: usize) -> f64 {
    if feature == ZERO_RUN {
        return 1.0;
    }
    match feature % 3 {
        0 => 0.7,
        1 => 1.0,
        _ => 0.4,
    }
}

fn feature_floor(feature: usize) -> f32 {
    if feature == ZERO_RUN {
        return 3.0;
    }
    let spec = INDICATORS[feature / 3];
    if feature % 3 == 1 { 1.0 } else { spec.floor }
}

/// Robust location and scale of each feature over the population (median, 1.4826 × MAD).
pub(crate) fn robust_reference(set: &FeatureSet) -> Vec<(f32, f32)> {
    (0..FEATURE_COUNT)
        .map(|j| {
            let mut v: Vec<f32> = set
                .meters
                .iter()
                .map(|m| m.values[j])
                .filter(|v| !v.is_nan())
                .collect();
            let med = median(&mut v);
            let mut dev: Vec<f32> = v.iter().map(|x| (x - med).abs()).collect();
            let mad = median(&mut dev) * 1.4826;
            (med, mad.max(feature_floor(j)))
        })
        .collect()
}

/// Scores every meter without labels: robust z-scores of the features against the population,
/// counted only in the suspicious direction, combined as a weighted root-sum-square.
pub fn score_unsupervised(set: &FeatureSet) -> Vec<TheftScore> {
    let reference = robust_reference(set);
    set.meters
        .iter()
        .map(|m| {
            let mut contributions: Vec<(usize, f64)> = Vec::new();
            let mut sum = 0.0;
            for (j, &(med, scale)) in reference.iter().enumerate() {
                let v = m.values[j];
                if v.is_nan() {
                    continue;
                }
                let z = f64::from((v - med) / scale).clamp(0.0, 12.0);
                let c = unsupervised_weight(j) * z * z;
                sum += c;
                contributions.push((j, z));
            }
            let raw = sum.sqrt();
            contributions.sort_by(|a, b| b.1.total_cmp(&a.1));
            let reasons = explain(m, contributions.iter().filter(|c| c.1 >= 3.0).map(|c| c.0));
            TheftScore {
                meter_id: m.meter_id.clone(),
                score: 1.0 - (-raw / 10.0).exp(),
                reasons,
            }
        })
        .collect()
}

/// Up to three reasons, one per indicator, in the order given.
pub(crate) fn explain(m: &MeterFeatures, features: impl Iterator<Item = usize>) -> Vec<String> {
    let mut used = [false; N_IND + 1];
    let mut out = Vec::new();
    for j in features {
        let ind = if j == ZERO_RUN { N_IND } else { j / 3 };
        if used[ind] {
            continue;
        }
        if let Some(text) = reason_text(m, j) {
            used[ind] = true;
            out.push(text);
        }
        if out.len() == 3 {
            break;
        }
    }
    out
}

fn reason_text(m: &MeterFeatures, j: usize) -> Option<String> {
    if j == ZERO_RUN {
        let days = m.values[ZERO_RUN];
        return (days >= 1.0).then(|| {
            format!(
                "{days:.0} near-zero days in a row from {}",
                format_day(m.zero_run_start)
            )
        });
    }
    let ind = j / 3;
    if j % 3 == 2 {
        let r = m.recent[ind];
        if r.is_nan() {
            return None;
        }
        return Some(match INDICATORS[ind].name {
            "level" => format!("recent consumption {:.2}x the peer median", r.exp()),
            "zero_days" => format!("{:.0}% of recent days near zero", 100.0 * r),
            "week_variation" => {
                format!("recent weeks unusually flat (day-to-day variation {r:.2})")
            }
            "week_pattern" => format!("recent weekly pattern unlike peers (correlation {r:.2})"),
            "day_to_day" => format!("recent day-to-day changes unusually erratic ({r:.2})"),
            "day_variation" => {
                format!("recent daily load profile unusually flat (variation {r:.2})")
            }
            "day_profile" => format!("recent daily load profile unlike peers (correlation {r:.2})"),
            _ => format!("recent interval readings unusually erratic ({r:.2})"),
        });
    }
    let s = m.shifts[ind]?;
    let from = format_day(s.start_day);
    Some(match INDICATORS[ind].name {
        "level" => format!(
            "consumption fell {:.0}% relative to peers from {from} and stayed low",
            100.0 * (1.0 - (s.after - s.before).exp())
        ),
        "zero_days" => format!(
            "near-zero days rose from {:.0}% to {:.0}% from {from}",
            100.0 * s.before,
            100.0 * s.after
        ),
        "week_variation" => format!(
            "day-to-day variation within the week fell from {:.2} to {:.2} from {from}",
            s.before, s.after
        ),
        "week_pattern" => format!(
            "weekly pattern stopped matching peers from {from} (correlation {:.2} -> {:.2})",
            s.before, s.after
        ),
        "day_to_day" => format!(
            "day-to-day changes became erratic from {from} ({:.2} -> {:.2})",
            s.before, s.after
        ),
        "day_variation" => format!(
            "daily load profile flattened from {from} (variation {:.2} -> {:.2})",
            s.before, s.after
        ),
        "day_profile" => format!(
            "daily load profile stopped matching peers from {from} (correlation {:.2} -> {:.2})",
            s.before, s.after
        ),
        _ => format!(
            "interval readings became erratic from {from} ({:.2} -> {:.2})",
            s.before, s.after
        ),
    })
}

/// Sorts scores highest first (ties by meter id, so output is deterministic).
pub fn rank(scores: &mut [TheftScore]) {
    scores.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.meter_id.cmp(&b.meter_id))
    });
}
