//! Realistic synthetic households and the six theft attacks of Jokar, Arianpoo and Leung,
//! "Electricity theft detection in AMI using customers' consumption patterns", IEEE Trans. Smart
//! Grid 7(1), 2016, §III-B, for evaluating the scores where no labelled field data is at hand.
//!
//! Households differ in size (log-normal level), heating and cooling seasonality, weekly habits,
//! noise and its persistence (AR(1)), share a common weather signal, take holidays, and some
//! change their consumption for honest reasons (moving, a new appliance) — the hard negatives a
//! theft detector must not flag. Readings go missing singly and in blocks. Intraday profiles have
//! a base load, household-specific morning and evening peaks and per-interval noise.

use crate::history::{DayNumber, MeterHistory};

/// A small deterministic generator (SplitMix64, Steele et al., OOPSLA 2014), so the evaluation is
/// reproducible without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [lo, hi).
    pub fn below(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.unit() * (hi - lo) as f64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The six attacks of Jokar et al. (2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attack {
    /// h1: every reading scaled by one random factor in [0.2, 0.8].
    H1,
    /// h2: readings zeroed in a random window (intraday: ≥ 4 h each day; daily: 2–16 weeks).
    H2,
    /// h3: every reading scaled by its own random factor in [0.2, 0.8].
    H3,
    /// h4: every reading replaced by a random fraction in [0.2, 0.8] of the window's mean.
    H4,
    /// h5: every reading replaced by the window's mean.
    H5,
    /// h6: the window's readings reversed in time.
    H6,
}

impl Attack {
    pub const ALL: [Attack; 6] = [
        Attack::H1,
        Attack::H2,
        Attack::H3,
        Attack::H4,
        Attack::H5,
        Attack::H6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::H1 => "h1",
            Attack::H2 => "h2",
            Attack::H3 => "h3",
            Attack::H4 => "h4",
            Attack::H5 => "h5",
            Attack::H6 => "h6",
        }
    }
}

/// Population settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    pub meters: usize,
    pub days: usize,
    /// 1 (daily) or e.g. 48 (half-hourly).
    pub intervals_per_day: u32,
    pub first_day: DayNumber,
    /// Whether to drop readings (singly and in blocks).
    pub missing: bool,
}

#[derive(Debug, Clone)]
struct Household {
    level_kwh: f64,
    winter: f64,
    summer: f64,
    weekend: f64,
    weekday: [f64; 7],
    phi: f64,
    sigma: f64,
    /// Day index and factor of an honest permanent change.
    change: Option<(usize, f64)>,
    holidays: Vec<(usize, usize, f64)>,
    morning_h: f64,
    evening_h: f64,
    morning_amp: f64,
    evening_amp: f64,
    base_share: f64,
    interval_sigma: f64,
    missing_rate: f64,
    gap: Option<(usize, usize)>,
}

fn household(rng: &mut Rng, days: usize) -> Household {
    let mut holidays = Vec::new();
    for _ in 0..(days / 365 + 1) {
        if rng.unit() < 0.6 {
            let len = rng.below(5, 22);
            let start = rng.below(0, days.saturating_sub(len).max(1));
            holidays.push((start, start + len, rng.uniform(0.15, 0.4)));
        }
    }
    Household {
        level_kwh: (8.0f64.ln() + 0.5 * rng.normal()).exp(),
        winter: if rng.unit() < 0.5 {
            rng.uniform(0.1, 0.6)
        } else {
            rng.uniform(0.0, 0.15)
        },
        summer: if rng.unit() < 0.4 {
            rng.uniform(0.1, 0.5)
        } else {
            rng.uniform(0.0, 0.1)
        },
        weekend: rng.uniform(0.85, 1.35),
        weekday: std::array::from_fn(|_| 1.0 + 0.05 * rng.normal()),
        phi: rng.uniform(0.3, 0.85),
        sigma: rng.uniform(0.08, 0.25),
        change: (rng.unit() < 0.1)
            .then(|| (rng.below(days / 5, days), (0.35 * rng.normal()).exp())),
        holidays,
        morning_h: rng.uniform(6.0, 9.0),
        evening_h: rng.uniform(17.5, 21.5),
        morning_amp: rng.uniform(0.3, 1.5),
        evening_amp: rng.uniform(0.8, 2.5),
        base_share: rng.uniform(0.3, 0.8),
        interval_sigma: rng.uniform(0.15, 0.45),
        missing_rate: if rng.unit() < 0.5 {
            0.0
        } else {
            rng.uniform(0.002, 0.05)
        },
        gap: (rng.unit() < 0.1).then(|| {
            let len = rng.below(7, 60);
            let start = rng.below(0, days.saturating_sub(len).max(1));
            (start, start + len)
        }),
    }
}

fn bump(hour: f64, centre: f64, width_h: f64) -> f64 {
    let d = (hour - centre).abs().min(24.0 - (hour - centre).abs());
    (-0.5 * (d / width_h).powi(2)).exp()
}

/// Generates an honest population. Meter ids are `m000000`, `m000001`, …
pub fn generate_population(cfg: &SynthConfig, seed: u64) -> Vec<MeterHistory> {
    let mut rng = Rng::new(seed);
    let ipd = cfg.intervals_per_day.max(1) as usize;
    // Weather shared by all households: a slow AR(1) on the log scale.
    let mut weather = Vec::with_capacity(cfg.days);
    let mut w = 0.0;
    for _ in 0..cfg.days {
        w = 0.9 * w + 0.04 * rng.normal();
        weather.push(w);
    }
    (0..cfg.meters)
        .map(|m| {
            let hh = household(&mut rng, cfg.days);
            let mut kwh = Vec::with_capacity(cfg.days * ipd);
            let mut e = 0.0;
            let profile: Vec<f64> = (0..ipd)
                .map(|s| {
                    let hour = (s as f64 + 0.5) * 24.0 / ipd as f64;
                    hh.base_share
                        + hh.morning_amp * bump(hour, hh.morning_h, 1.0)
                        + hh.evening_amp * bump(hour, hh.evening_h, 1.5)
                })
                .collect();
            let profile_sum: f64 = profile.iter().sum();
            for (t, weather_t) in weather.iter().enumerate() {
                let day = cfg.first_day + t as i32;
                let doy = f64::from(
                    (day - crate::history::days_from_civil(
                        crate::history::civil_from_days(day).0,
                        1,
                        1,
                    )) as i16,
                );
                let season = 1.0
                    + hh.winter
                        * (std::f64::consts::TAU * (doy - 15.0) / 365.25)
                            .cos()
                            .max(0.0)
                    + hh.summer
                        * (std::f64::consts::TAU * (doy - 200.0) / 365.25)
                            .cos()
                            .max(0.0);
                let wd = (day + 3).rem_euclid(7) as usize;
                let week = hh.weekday[wd] * if wd >= 5 { hh.weekend } else { 1.0 };
                e = hh.phi * e + hh.sigma * (1.0 - hh.phi * hh.phi).sqrt() * rng.normal();
                let mut total = hh.level_kwh * season * week * (e + weather_t).exp();
                if let Some((at, f)) = hh.change
                    && t >= at
                {
                    total *= f;
                }
                for &(a, b, f) in &hh.holidays {
                    if (a..b).contains(&t) {
                        total *= f;
                    }
                }
                let missing_day = hh.gap.is_some_and(|(a, b)| (a..b).contains(&t));
                if ipd == 1 {
                    let miss = cfg.missing && (missing_day || rng.unit() < hh.missing_rate);
                    kwh.push(if miss { f32::NAN } else { total as f32 });
                } else {
                    let noisy: Vec<f64> = profile
                        .iter()
                        .map(|p| p * (hh.interval_sigma * rng.normal()).exp())
                        .collect();
                    let s: f64 = noisy.iter().sum::<f64>() / profile_sum;
                    for v in noisy {
                        let miss = cfg.missing && (missing_day || rng.unit() < hh.missing_rate);
                        kwh.push(if miss {
                            f32::NAN
                        } else {
                            (total * v / (profile_sum * s)) as f32
                        });
                    }
                }
            }
            MeterHistory {
                meter_id: format!("m{m:06}"),
                first_day: cfg.first_day,
                intervals_per_day: ipd as u32,
                kwh,
            }
        })
        .collect()
}

/// Applies `attack` to `history` from day index `start` to the end. Intraday data is attacked
/// day by day as in Jokar et al.; daily data, where "the day" has one reading, uses 7-day windows
/// for the window-based attacks (h4, h5, h6).
pub fn inject(history: &mut MeterHistory, attack: Attack, start: usize, rng: &mut Rng) {
    let ipd = history.intervals_per_day.max(1) as usize;
    let window = if ipd == 1 { 7 } else { ipd };
    let from = (start * ipd).min(history.kwh.len());
    let values = &mut history.kwh[from..];
    match attack {
        Attack::H1 => {
            let a = rng.uniform(0.2, 0.8) as f32;
            values.iter_mut().for_each(|v| *v *= a);
        }
        Attack::H2 => {
            if ipd == 1 {
                let len = rng.below(14, 113).min(values.len());
                values[..len]
                    .iter_mut()
                    .filter(|v| !v.is_nan())
                    .for_each(|v| *v = 0.0);
            } else {
                for day in values.chunks_mut(ipd) {
                    let min_len = ipd / 6;
                    let len = rng.below(min_len, ipd);
                    let at = rng.below(0, ipd - len + 1);
                    for v in day.iter_mut().skip(at).take(len) {
                        if !v.is_nan() {
                            *v = 0.0;
                        }
                    }
                }
            }
        }
        Attack::H3 => values
            .iter_mut()
            .for_each(|v| *v *= rng.uniform(0.2, 0.8) as f32),
        Attack::H4 | Attack::H5 | Attack::H6 => {
            for chunk in values.chunks_mut(window) {
                let (n, s) = chunk
                    .iter()
                    .filter(|v| !v.is_nan())
                    .fold((0u32, 0.0f32), |(n, s), v| (n + 1, s + v));
                if n == 0 {
                    continue;
                }
                let mean = s / n as f32;
                match attack {
                    Attack::H4 => chunk.iter_mut().filter(|v| !v.is_nan()).for_each(|v| {
                        *v = mean * rng.uniform(0.2, 0.8) as f32;
                    }),
                    Attack::H5 => chunk
                        .iter_mut()
                        .filter(|v| !v.is_nan())
                        .for_each(|v| *v = mean),
                    _ => chunk.reverse(),
                }
            }
        }
    }
}
