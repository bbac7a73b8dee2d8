//! Energy balance of an observer meter against the meters it feeds (issue 7 item 1).
//!
//! Per interval, `residual = E_observer − Σ E_children − estimated technical loss`. The loss model
//! covers line I²R per segment (resistance from length, cross-section and material, corrected
//! for conductor temperature), neutral-conductor loss from unbalanced phases, and transformer
//! no-load and load losses when the observer sits upstream of a transformer. The alarm threshold
//! is derived per interval from the meters' accuracy classes and the loss model's uncertainty,
//! so it is wide at light load (where class limits widen and absolute errors dominate) and
//! narrow where the meters are accurate. Calibration on a period known to be honest removes the
//! meters' fixed gain errors and the loss model's bias, shrinking the threshold to the drift the
//! standards allow plus the noise actually seen; a CUSUM then catches slow persistent theft that
//! stays below the per-interval threshold. The seed's flat 2 % rule (seed 003: power before the
//! house vs at the house meter, > 2 % ⇒ theft) is kept as [`BalanceMode::FlatPercent`].

use crate::error::Error;
use crate::history::Diagnostic;

/// Conductor material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Material {
    Copper,
    Aluminium,
}

impl Material {
    /// Resistivity at 20 °C in Ω·mm²/m: annealed copper 1/58 (IEC 60028), hard-drawn aluminium
    /// 0.028264 (IEC 60889).
    pub fn resistivity_ohm_mm2_per_m(self) -> f64 {
        match self {
            Material::Copper => 0.017_241,
            Material::Aluminium => 0.028_264,
        }
    }

    /// Temperature coefficient of resistance at 20 °C, per kelvin (IEC 60028 / IEC 60889).
    pub fn temp_coeff_per_k(self) -> f64 {
        match self {
            Material::Copper => 0.003_93,
            Material::Aluminium => 0.004_03,
        }
    }
}

/// One conductor of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conductor {
    pub material: Material,
    pub cross_section_mm2: f64,
}

impl Conductor {
    /// DC resistance of `length_m` at `temp_c`: R = ρ₂₀·L/A·(1 + α(T − 20)).
    pub fn resistance_ohm(&self, length_m: f64, temp_c: f64) -> f64 {
        self.material.resistivity_ohm_mm2_per_m() * length_m / self.cross_section_mm2
            * (1.0 + self.material.temp_coeff_per_k() * (temp_c - 20.0))
    }
}

/// How the load is spread along a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadDistribution {
    /// All current flows through the whole segment (a service drop, a line to one cabinet).
    Lumped,
    /// Loads tapped evenly along the segment: the current falls linearly, and the loss is one
    /// third of the lumped value (∫₀¹ (1 − x)² dx = 1/3).
    Uniform,
}

/// A line segment: phase conductors, a neutral, a length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineSegment {
    pub length_m: f64,
    pub phase: Conductor,
    pub neutral: Conductor,
    pub distribution: LoadDistribution,
}

/// A distribution transformer between the observer and the customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transformer {
    pub rated_kva: f64,
    /// Iron (no-load) loss, present whenever energised.
    pub no_load_loss_w: f64,
    /// Copper (load) loss at rated current; scales with (S/Sr)² (IEC 60076-1).
    pub load_loss_w: f64,
}

/// Accuracy class of an active-energy meter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AccuracyClass {
    /// IEC 62053-21 class 2.
    Class2,
    /// IEC 62053-21 class 1.
    Class1,
    /// IEC 62053-22 class 0.5S.
    Class05S,
    /// IEC 62053-22 class 0.2S.
    Class02S,
    /// A measured or declared error limit in percent, flat over the load range.
    Percent(f64),
}

impl AccuracyClass {
    /// Percentage error limit at unity power factor and the current as a fraction of the basic
    /// (Ib, direct meters) or rated (In, transformer meters) current, with the lower limit of the
    /// range where it applies. IEC 62053-21 (classes 1, 2): ±1.5/±2.5 % from 0.05 Ib, ±1/±2 % from
    /// 0.1 Ib; IEC 62053-22 (0.5S, 0.2S): ±1.0/±0.4 % from 0.01 In, ±0.5/±0.2 % from 0.05 In.
    fn limit(self, current_fraction: f64) -> (f64, f64) {
        let (low, high, knee, lowest) = match self {
            AccuracyClass::Class2 => (2.5, 2.0, 0.1, 0.05),
            AccuracyClass::Class1 => (1.5, 1.0, 0.1, 0.05),
            AccuracyClass::Class05S => (1.0, 0.5, 0.05, 0.01),
            AccuracyClass::Class02S => (0.4, 0.2, 0.05, 0.01),
            AccuracyClass::Percent(p) => (p, p, 0.0, 0.0),
        };
        if current_fraction >= knee {
            (high, lowest)
        } else {
            (low, lowest)
        }
    }

    /// Worst-case absolute error in Wh of a reading of `energy_wh` taken at `current_a` by a meter
    /// with basic current `basic_a`. Below the lowest specified current the standard sets no
    /// percentage; we keep the absolute error reached at that current, which is what a meter's
    /// offset-dominated error does at very light load.
    fn error_wh(self, energy_wh: f64, current_a: f64, basic_a: f64) -> f64 {
        let fraction = if basic_a > 0.0 {
            current_a / basic_a
        } else {
            1.0
        };
        let (pct, lowest) = self.limit(fraction);
        let floor = if fraction > 0.0 && fraction < lowest {
            energy_wh * lowest / fraction
        } else {
            energy_wh
        };
        pct / 100.0 * energy_wh.abs().max(floor.abs())
    }

    /// Mean temperature coefficient limit in %/K (IEC 62053-21/-22, influence of ambient
    /// temperature): the gain drift allowed after calibration per kelvin of change.
    fn temp_coeff_pct_per_k(self) -> f64 {
        match self {
            AccuracyClass::Class2 => 0.10,
            AccuracyClass::Class1 => 0.05,
            AccuracyClass::Class05S => 0.03,
            AccuracyClass::Class02S => 0.01,
            AccuracyClass::Percent(p) => 0.05 * p,
        }
    }
}

/// A meter in the balance.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSpec {
    pub meter_id: String,
    pub class: AccuracyClass,
    /// Ib (direct) or In (transformer-operated), in amperes.
    pub basic_current_a: f64,
    /// Register resolution: each reading is uncertain by up to one step.
    pub resolution_wh: f64,
}

/// Where a child meter is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    PhaseA,
    PhaseB,
    PhaseC,
    /// A balanced three-phase customer.
    ThreePhase,
}

/// A customer meter fed through the observer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    pub meter: MeterSpec,
    pub connection: Connection,
    /// The service line from the shared feeder to this meter.
    pub service: Option<LineSegment>,
}

/// The observer meter, the network it watches and the meters behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceTopology {
    pub observer: MeterSpec,
    /// `false` for a single-phase line sensor (seed 003), `true` for a three-phase feeder meter.
    pub three_phase: bool,
    /// Present when the observer measures upstream of a transformer.
    pub transformer: Option<Transformer>,
    /// Shared segments between the observer and the service lines.
    pub feeder: Vec<LineSegment>,
    pub children: Vec<ChildSpec>,
    /// Phase-to-neutral voltage.
    pub nominal_voltage_v: f64,
    /// Assumed power factor of the loads (currents are estimated from energy).
    pub power_factor: f64,
}

/// One interval's readings.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalReading {
    /// Interval start, seconds since the Unix epoch (passed in; this crate reads no clock).
    pub start_s: i64,
    pub duration_s: f64,
    pub observer_wh: Option<f64>,
    /// In the order of [`BalanceTopology::children`].
    pub children_wh: Vec<Option<f64>>,
    /// Conductor temperature if known (else [`BalanceConfig::conductor_temp_c`]).
    pub conductor_temp_c: Option<f64>,
}

/// Which rule decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BalanceMode {
    /// Loss model with class-derived per-interval thresholds (and, once calibrated, CUSUM).
    LossModel,
    /// The seed's rule: (E_observer − Σ E_children)/E_observer above this percentage is theft.
    FlatPercent(f64),
}

/// Settings of the balance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceConfig {
    pub mode: BalanceMode,
    /// Conductor temperature when readings do not carry one.
    pub conductor_temp_c: f64,
    /// Relative uncertainty of the uncalibrated loss estimate (temperature, lengths, and the
    /// within-interval load variation that mean currents hide).
    pub loss_uncertainty: f64,
    /// Ambient temperature change the meters may see after calibration, for the drift bound.
    pub meter_temp_swing_k: f64,
    /// Coverage factor on the calibrated noise.
    pub k_sigma: f64,
    /// CUSUM reference value and decision interval, in units of the calibrated noise
    /// (Page, "Continuous inspection schemes", Biometrika 41, 1954).
    pub cusum_k: f64,
    pub cusum_h: f64,
    /// Offset added to timestamps before cutting days (local midnight).
    pub day_offset_s: i64,
    /// The last this many readings are context, not evaluated: they only settle whether the
    /// interval before them keeps its alarm (see [`evaluate_balance`]). A live job passes the
    /// newest interval as context, so the newest judged interval has both neighbours.
    pub lookahead_intervals: usize,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            mode: BalanceMode::LossModel,
            conductor_temp_c: 25.0,
            loss_uncertainty: 0.35,
            meter_temp_swing_k: 10.0,
            k_sigma: 5.0,
            cusum_k: 1.0,
            cusum_h: 12.0,
            day_offset_s: 0,
            lookahead_intervals: 0,
        }
    }
}

/// What a calibration on honest data learnt: `expected residual = gain·ΣE + loss_scale·L +
/// constant_w·Δt`, and the noise around it `σ² = s0² + (s1·ΣE)² + (s2·L)²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub gain: f64,
    pub loss_scale: f64,
    pub constant_w: f64,
    pub s0_wh: f64,
    pub s1: f64,
    pub s2: f64,
    pub intervals: usize,
}

/// The balance of one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalBalance {
    pub start_s: i64,
    pub observer_wh: f64,
    pub children_wh: f64,
    pub loss_wh: f64,
    /// Observer − children − expected residual (loss, plus calibrated corrections).
    pub residual_wh: f64,
    pub threshold_wh: f64,
    pub alarm: bool,
    /// CUSUM statistic after this interval (0 without calibration or in flat mode).
    pub cusum: f64,
}

/// The balance of one day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayBalance {
    /// Days since 1970-01-01 (after `day_offset_s`).
    pub day: i32,
    pub intervals: usize,
    pub observer_wh: f64,
    pub children_wh: f64,
    pub loss_wh: f64,
    pub residual_wh: f64,
    pub threshold_wh: f64,
    pub alarm: bool,
}

/// Kind of balance alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceAlarm {
    /// Consecutive intervals over their threshold.
    Interval,
    /// A day over its threshold.
    Day,
    /// The CUSUM crossed its decision interval: a small persistent excess.
    Cusum,
}

/// An alarm episode with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceFinding {
    pub alarm: BalanceAlarm,
    pub start_s: i64,
    pub end_s: i64,
    /// Unexplained energy over the episode.
    pub excess_wh: f64,
    pub message: String,
}

/// Everything the balance found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BalanceReport {
    pub intervals: Vec<IntervalBalance>,
    pub days: Vec<DayBalance>,
    pub findings: Vec<BalanceFinding>,
    pub diagnostics: Vec<Diagnostic>,
}

impl BalanceTopology {
    /// Checks the configuration once, so evaluation never has to.
    pub fn validate(&self) -> Result<(), Error> {
        if !positive(self.nominal_voltage_v) {
            return Err(Error::config("nominal voltage must be positive"));
        }
        if !positive(self.power_factor) || self.power_factor > 1.0 {
            return Err(Error::config("power factor must be in (0, 1]"));
        }
        let segments = self
            .feeder
            .iter()
            .chain(self.children.iter().filter_map(|c| c.service.as_ref()));
        for s in segments {
            if !(s.length_m >= 0.0
                && s.phase.cross_section_mm2 > 0.0
                && s.neutral.cross_section_mm2 > 0.0)
            {
                return Err(Error::config(
                    "line segments need a length ≥ 0 and cross-sections > 0",
                ));
            }
        }
        if self.transformer.is_some_and(|t| !positive(t.rated_kva)) {
            return Err(Error::config("transformer rating must be positive"));
        }
        Ok(())
    }

    /// Estimated technical loss in Wh for one interval with the children's energies given.
    pub fn loss_wh(&self, children_wh: &[f64], duration_s: f64, temp_c: f64) -> f64 {
        let hours = duration_s / 3600.0;
        let v = self.nominal_voltage_v;
        let pf = self.power_factor;
        let mut phase_a = [0.0f64; 3];
        let mut loss_w = 0.0;
        for (child, &e) in self.children.iter().zip(children_wh) {
            let p_w = e / hours;
            let (per_phase, phases): (f64, &[usize]) = match child.connection {
                Connection::PhaseA => (p_w / (v * pf), &[0]),
                Connection::PhaseB => (p_w / (v * pf), &[1]),
                Connection::PhaseC => (p_w / (v * pf), &[2]),
                Connection::ThreePhase => (p_w / (3.0 * v * pf), &[0, 1, 2]),
            };
            for &ph in phases {
                phase_a[if self.three_phase { ph } else { 0 }] += per_phase;
            }
            if let Some(s) = &child.service {
                let r_ph = s.phase.resistance_ohm(s.length_m, temp_c);
                let r_n = s.neutral.resistance_ohm(s.length_m, temp_c);
                let k = distribution_factor(s.distribution);
                loss_w += k * match child.connection {
                    // Single-phase: the current returns in the neutral.
                    Connection::ThreePhase => 3.0 * per_phase * per_phase * r_ph,
                    _ => per_phase * per_phase * (r_ph + r_n),
                };
            }
        }
        let [ia, ib, ic] = phase_a;
        // Neutral current of three phase currents at equal power factor: |Ia + a²Ib + aIc|.
        let i_n2 = (ia * ia + ib * ib + ic * ic - ia * ib - ib * ic - ic * ia).max(0.0);
        for s in &self.feeder {
            let r_ph = s.phase.resistance_ohm(s.length_m, temp_c);
            let r_n = s.neutral.resistance_ohm(s.length_m, temp_c);
            let k = distribution_factor(s.distribution);
            loss_w += k * if self.three_phase {
                (ia * ia + ib * ib + ic * ic) * r_ph + i_n2 * r_n
            } else {
                ia * ia * (r_ph + r_n)
            };
        }
        if let Some(t) = &self.transformer {
            let s_kva = children_wh.iter().sum::<f64>() / hours / pf / 1000.0;
            loss_w += t.no_load_loss_w + t.load_loss_w * (s_kva / t.rated_kva).powi(2);
        }
        loss_w * hours
    }

    /// Worst-case metering error (sum of class limits) of one interval, Wh.
    fn metering_error_wh(&self, observer_wh: f64, children_wh: &[f64], hours: f64) -> f64 {
        let v = self.nominal_voltage_v * self.power_factor;
        let phases = if self.three_phase { 3.0 } else { 1.0 };
        let mut total = self.observer.class.error_wh(
            observer_wh,
            observer_wh / hours / (phases * v),
            self.observer.basic_current_a,
        ) + self.observer.resolution_wh;
        for (c, &e) in self.children.iter().zip(children_wh) {
            let per_phase = if c.connection == Connection::ThreePhase {
                3.0
            } else {
                1.0
            };
            total +=
                c.meter
                    .class
                    .error_wh(e, e / hours / (per_phase * v), c.meter.basic_current_a)
                    + c.meter.resolution_wh;
        }
        total
    }

    /// Bound on the gain drift after calibration, Wh.
    fn drift_wh(&self, observer_wh: f64, children_wh: &[f64], swing_k: f64) -> f64 {
        let mut d = self.observer.class.temp_coeff_pct_per_k() * observer_wh.abs();
        for (c, &e) in self.children.iter().zip(children_wh) {
            d += c.meter.class.temp_coeff_pct_per_k() * e.abs();
        }
        d * swing_k / 100.0
    }

    fn quantisation_sigma_wh(&self) -> f64 {
        let q2 = self.observer.resolution_wh.powi(2)
            + self
                .children
                .iter()
                .map(|c| c.meter.resolution_wh.powi(2))
                .sum::<f64>();
        (q2 / 12.0).sqrt()
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time, for messages.
fn format_unix_s(t: i64) -> String {
    let day = t.div_euclid(86_400) as i32;
    let s = t.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02} UTC",
        crate::history::format_day(day),
        s / 3600,
        s % 3600 / 60
    )
}

/// `x > 0`, false for NaN.
fn positive(x: f64) -> bool {
    x > 0.0
}

fn distribution_factor(d: LoadDistribution) -> f64 {
    match d {
        LoadDistribution::Lumped => 1.0,
        LoadDistribution::Uniform => 1.0 / 3.0,
    }
}

/// An interval with complete, plausible readings.
struct Clean {
    start_s: i64,
    hours: f64,
    observer_wh: f64,
    children: Vec<f64>,
    temp_c: f64,
}

fn clean(
    topology: &BalanceTopology,
    readings: &[IntervalReading],
    cfg: &BalanceConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Clean> {
    let mut out = Vec::with_capacity(readings.len());
    let (mut incomplete, mut invalid) = (0usize, 0usize);
    for r in readings {
        if !positive(r.duration_s) || r.children_wh.len() != topology.children.len() {
            invalid += 1;
            continue;
        }
        let children: Option<Vec<f64>> = r.children_wh.iter().copied().collect();
        let (Some(observer_wh), Some(children)) = (r.observer_wh, children) else {
            incomplete += 1;
            continue;
        };
        if !observer_wh.is_finite()
            || observer_wh < 0.0
            || children.iter().any(|e| !e.is_finite() || *e < 0.0)
        {
            invalid += 1;
            continue;
        }
        out.push(Clean {
            start_s: r.start_s,
            hours: r.duration_s / 3600.0,
            observer_wh,
            children,
            temp_c: r.conductor_temp_c.unwrap_or(cfg.conductor_temp_c),
        });
    }
    if incomplete > 0 {
        diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: format!("{incomplete} interval(s) skipped: a meter's reading is missing"),
        });
    }
    if invalid > 0 {
        diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: format!(
                "{invalid} interval(s) skipped: negative, non-finite or misshapen readings"
            ),
        });
    }
    out
}

/// Solves the 3×3 system `a·x = b` by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..3 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Ridge least squares of `y` on three regressors, shrunk towards `prior` with weights `ridge`.
fn ridge3(rows: &[([f64; 3], f64)], prior: [f64; 3], ridge: [f64; 3]) -> Option<[f64; 3]> {
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for (x, y) in rows {
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += x[i] * x[j];
            }
            b[i] += x[i] * y;
        }
    }
    for i in 0..3 {
        a[i][i] += ridge[i];
        b[i] += ridge[i] * prior[i];
    }
    solve3(a, b)
}

/// Calibrates the model on a period known to be honest. Needs at least 48 complete intervals;
/// otherwise returns `None` with a diagnostic saying why.
pub fn calibrate(
    topology: &BalanceTopology,
    readings: &[IntervalReading],
    cfg: &BalanceConfig,
) -> (Option<Calibration>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let rows = clean(topology, readings, cfg, &mut diagnostics);
    if rows.len() < 48 {
        diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: format!(
                "calibration needs at least 48 complete intervals, got {}; model left uncalibrated",
                rows.len()
            ),
        });
        return (None, diagnostics);
    }
    let data: Vec<([f64; 3], f64, f64)> = rows
        .iter()
        .map(|r| {
            let sum: f64 = r.children.iter().sum();
            let loss = topology.loss_wh(&r.children, r.hours * 3600.0, r.temp_c);
            ([sum, loss, r.hours], r.observer_wh - sum, loss)
        })
        .collect();
    let n = data.len() as f64;
    // Scale the ridge to the data so the prior matters only when the data cannot tell (constant
    // load makes ΣE and L collinear): about the weight of 1 % of the intervals.
    let scale =
        |k: usize| data.iter().map(|d| d.0[k] * d.0[k]).sum::<f64>() / n * (0.01 * n).max(1.0);
    let prior_const = topology.transformer.map_or(0.0, |t| t.no_load_loss_w);
    let fit_rows: Vec<([f64; 3], f64)> = data.iter().map(|d| (d.0, d.1)).collect();
    let Some(c) = ridge3(
        &fit_rows,
        [0.0, 1.0, prior_const],
        [scale(0), scale(1), scale(2)],
    ) else {
        diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: "calibration system is singular; model left uncalibrated".into(),
        });
        return (None, diagnostics);
    };
    // Noise model on the squared residuals, non-negative coefficients.
    let resid: Vec<([f64; 3], f64)> = data
        .iter()
        .map(|(x, y, loss)| {
            let e = y - (c[0] * x[0] + c[1] * x[1] + c[2] * x[2]);
            ([1.0, x[0] * x[0], loss * loss], e * e)
        })
        .collect();
    let q = topology.quantisation_sigma_wh();
    let tiny =
        [1e-6, 1e-6, 1e-6].map(|r: f64| r * resid.iter().map(|d| d.1).sum::<f64>().max(1e-12));
    let v = ridge3(&resid, [q * q, 0.0, 0.0], tiny).unwrap_or([q * q, 0.0, 0.0]);
    let calibration = Calibration {
        gain: c[0],
        loss_scale: c[1],
        constant_w: c[2],
        s0_wh: v[0].max(q * q).sqrt(),
        s1: v[1].max(0.0).sqrt(),
        s2: v[2].max(0.0).sqrt(),
        intervals: data.len(),
    };
    (Some(calibration), diagnostics)
}

/// Evaluates the balance of every interval and day, with alarms and their episodes.
///
/// In [`BalanceMode::LossModel`] an interval over its threshold keeps its alarm only if it is
/// still over when paired with each adjacent interval whose residual is negative: a reading
/// stamped a little late or early moves energy across the boundary between two intervals (one
/// looks short of energy, the other has too much) but cannot create any, so such a pair must
/// exceed the two thresholds together. Energy missing for real leaves no negative neighbour and
/// is unaffected. The seed's flat rule ([`BalanceMode::FlatPercent`]) is kept as published.
pub fn evaluate_balance(
    topology: &BalanceTopology,
    calibration: Option<&Calibration>,
    readings: &[IntervalReading],
    cfg: &BalanceConfig,
) -> BalanceReport {
    let mut report = BalanceReport::default();
    if let Err(e) = topology.validate() {
        report.diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: format!("balance not evaluated: {e}"),
        });
        return report;
    }
    let evaluated = readings.len().saturating_sub(cfg.lookahead_intervals);
    let context_from_s = readings.get(evaluated).map_or(i64::MAX, |r| r.start_s);
    let rows = clean(topology, readings, cfg, &mut report.diagnostics);
    // Residual and threshold of the context intervals after the evaluated ones.
    let mut context: Vec<(i64, f64, f64)> = Vec::new();
    if calibration.is_none() && cfg.mode == BalanceMode::LossModel {
        report.diagnostics.push(Diagnostic {
            meter_id: Some(topology.observer.meter_id.clone()),
            message: "not calibrated: thresholds use worst-case class limits and CUSUM is off"
                .into(),
        });
    }
    let mut cusum = 0.0f64;
    let mut cusum_start: Option<(i64, f64)> = None;
    let mut day_acc: Vec<DayAcc> = Vec::new();
    for r in &rows {
        let children_wh: f64 = r.children.iter().sum();
        let (loss_wh, residual_wh, linear_wh, sigma_wh) = match cfg.mode {
            BalanceMode::FlatPercent(_) => (0.0, r.observer_wh - children_wh, 0.0, 0.0),
            BalanceMode::LossModel => {
                let loss = topology.loss_wh(&r.children, r.hours * 3600.0, r.temp_c);
                match calibration {
                    None => {
                        let u = topology.metering_error_wh(r.observer_wh, &r.children, r.hours)
                            + cfg.loss_uncertainty * loss;
                        (loss, r.observer_wh - children_wh - loss, u, 0.0)
                    }
                    Some(c) => {
                        let expected =
                            c.gain * children_wh + c.loss_scale * loss + c.constant_w * r.hours;
                        let sigma = (c.s0_wh.powi(2)
                            + (c.s1 * children_wh).powi(2)
                            + (c.s2 * loss).powi(2))
                        .sqrt();
                        let drift =
                            topology.drift_wh(r.observer_wh, &r.children, cfg.meter_temp_swing_k);
                        (loss, r.observer_wh - children_wh - expected, drift, sigma)
                    }
                }
            }
        };
        let threshold_wh = match cfg.mode {
            BalanceMode::FlatPercent(p) => p / 100.0 * r.observer_wh,
            BalanceMode::LossModel => linear_wh + cfg.k_sigma * sigma_wh,
        };
        if r.start_s >= context_from_s {
            context.push((r.start_s, residual_wh, threshold_wh));
            continue;
        }
        let alarm = residual_wh > threshold_wh;
        if sigma_wh > 0.0 {
            // The drift bound enters as the variance of a uniform error of that half-width.
            let z = residual_wh / (sigma_wh.powi(2) + linear_wh.powi(2) / 3.0).sqrt();
            if cusum == 0.0 {
                cusum_start = Some((r.start_s, 0.0));
            }
            cusum = (cusum + z - cfg.cusum_k).max(0.0);
            if let Some(s) = cusum_start.as_mut() {
                s.1 += residual_wh;
            }
            if cusum > cfg.cusum_h {
                let (start_s, excess_wh) = cusum_start.take().unwrap_or((r.start_s, residual_wh));
                report.findings.push(BalanceFinding {
                    alarm: BalanceAlarm::Cusum,
                    start_s,
                    end_s: r.start_s + (r.hours * 3600.0) as i64,
                    excess_wh,
                    message: format!(
                        "persistent unexplained energy at {}: {:.0} Wh since {} (CUSUM)",
                        topology.observer.meter_id,
                        excess_wh,
                        format_unix_s(start_s)
                    ),
                });
                cusum = 0.0;
            }
        }
        report.intervals.push(IntervalBalance {
            start_s: r.start_s,
            observer_wh: r.observer_wh,
            children_wh,
            loss_wh,
            residual_wh,
            threshold_wh,
            alarm,
            cusum,
        });
        let day = (r.start_s + cfg.day_offset_s).div_euclid(86_400) as i32;
        if day_acc.last().is_none_or(|d| d.day != day) {
            day_acc.push(DayAcc {
                day,
                ..DayAcc::default()
            });
        }
        let d = day_acc.last_mut().expect("pushed above");
        d.intervals += 1;
        d.observer_wh += r.observer_wh;
        d.children_wh += children_wh;
        d.loss_wh += loss_wh;
        d.residual_wh += residual_wh;
        d.linear_wh += linear_wh;
        d.variance_wh2 += sigma_wh * sigma_wh;
    }
    if cfg.mode == BalanceMode::LossModel {
        confirm_against_neighbours(&mut report.intervals, &rows, &context);
    }
    interval_episodes(&mut report, &rows, topology);
    for acc in day_acc {
        let DayAcc {
            day,
            intervals,
            observer_wh: obs,
            children_wh: children,
            loss_wh: loss,
            residual_wh: residual,
            linear_wh: linear,
            variance_wh2: var,
        } = acc;
        let threshold_wh = match cfg.mode {
            BalanceMode::FlatPercent(p) => p / 100.0 * obs,
            BalanceMode::LossModel => linear + cfg.k_sigma * var.sqrt(),
        };
        let alarm = residual > threshold_wh;
        if residual < -threshold_wh && cfg.mode == BalanceMode::LossModel {
            // The meters behind read more than the observer can have delivered: not theft, but
            // a wrong topology (a meter fed from elsewhere), a CT ratio or a meter fault.
            report.diagnostics.push(Diagnostic {
                meter_id: Some(topology.observer.meter_id.clone()),
                message: format!(
                    "on {} the meters behind read {:.0} Wh more than the observer explains; check the topology, CT ratios and meters",
                    crate::history::format_day(day),
                    -residual
                ),
            });
        }
        if alarm {
            report.findings.push(BalanceFinding {
                alarm: BalanceAlarm::Day,
                start_s: i64::from(day) * 86_400 - cfg.day_offset_s,
                end_s: i64::from(day + 1) * 86_400 - cfg.day_offset_s,
                excess_wh: residual,
                message: format!(
                    "{} Wh unexplained at {} over the day ({:.2} % of the observed energy, threshold {:.0} Wh)",
                    residual.round(),
                    topology.observer.meter_id,
                    100.0 * residual / obs.max(1e-9),
                    threshold_wh
                ),
            });
        }
        report.days.push(DayBalance {
            day,
            intervals,
            observer_wh: obs,
            children_wh: children,
            loss_wh: loss,
            residual_wh: residual,
            threshold_wh,
            alarm,
        });
    }
    report
}

/// Sums over one day: the linear (worst-case) part of the thresholds adds up, the random part
/// adds in variance.
#[derive(Debug, Default)]
struct DayAcc {
    day: i32,
    intervals: usize,
    observer_wh: f64,
    children_wh: f64,
    loss_wh: f64,
    residual_wh: f64,
    linear_wh: f64,
    variance_wh2: f64,
}

/// Clears the alarm of an interval that is over its threshold only by energy an adjacent
/// interval lacks (see [`evaluate_balance`]). `rows` are the evaluated intervals in order,
/// `context` the (start, residual, threshold) of the intervals after them.
fn confirm_against_neighbours(
    intervals: &mut [IntervalBalance],
    rows: &[Clean],
    context: &[(i64, f64, f64)],
) {
    let end_s = |r: &Clean| r.start_s + (r.hours * 3600.0).round() as i64;
    let confirmed: Vec<bool> = (0..intervals.len())
        .map(|i| {
            let me = &intervals[i];
            if !me.alarm {
                return false;
            }
            let before = i
                .checked_sub(1)
                .filter(|&j| end_s(&rows[j]) == rows[i].start_s)
                .map(|j| (intervals[j].residual_wh, intervals[j].threshold_wh));
            let after = match intervals.get(i + 1) {
                Some(n) => Some((n.start_s, n.residual_wh, n.threshold_wh)),
                None => context.first().copied(),
            }
            .filter(|n| n.0 == end_s(&rows[i]))
            .map(|n| (n.1, n.2));
            [before, after]
                .into_iter()
                .flatten()
                .all(|(residual, threshold)| {
                    residual >= 0.0 || me.residual_wh + residual > me.threshold_wh + threshold
                })
        })
        .collect();
    for (interval, keep) in intervals.iter_mut().zip(confirmed) {
        interval.alarm = keep;
    }
}

/// Merges runs of alarmed intervals into one finding each.
fn interval_episodes(report: &mut BalanceReport, rows: &[Clean], topology: &BalanceTopology) {
    let mut i = 0;
    while i < report.intervals.len() {
        if !report.intervals[i].alarm {
            i += 1;
            continue;
        }
        let start = i;
        let mut excess = 0.0;
        while i < report.intervals.len() && report.intervals[i].alarm {
            excess += report.intervals[i].residual_wh;
            i += 1;
        }
        let last = &rows[i - 1];
        report.findings.push(BalanceFinding {
            alarm: BalanceAlarm::Interval,
            start_s: rows[start].start_s,
            end_s: last.start_s + (last.hours * 3600.0) as i64,
            excess_wh: excess,
            message: format!(
                "{} interval(s) over threshold at {}: {:.0} Wh unexplained",
                i - start,
                topology.observer.meter_id,
                excess
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(id: &str, class: AccuracyClass) -> MeterSpec {
        MeterSpec {
            meter_id: id.into(),
            class,
            basic_current_a: 5.0,
            resolution_wh: 0.1,
        }
    }

    fn house(length_m: f64) -> BalanceTopology {
        let cu16 = Conductor {
            material: Material::Copper,
            cross_section_mm2: 16.0,
        };
        BalanceTopology {
            observer: meter("pole", AccuracyClass::Class1),
            three_phase: false,
            transformer: None,
            feeder: vec![],
            children: vec![ChildSpec {
                meter: meter("house", AccuracyClass::Class1),
                connection: Connection::PhaseA,
                service: Some(LineSegment {
                    length_m,
                    phase: cu16,
                    neutral: cu16,
                    distribution: LoadDistribution::Lumped,
                }),
            }],
            nominal_voltage_v: 230.0,
            power_factor: 1.0,
        }
    }

    #[test]
    fn copper_resistance_and_temperature() {
        let c = Conductor {
            material: Material::Copper,
            cross_section_mm2: 1.0,
        };
        assert!((c.resistance_ohm(1000.0, 20.0) - 17.241).abs() < 1e-9);
        assert!(
            (c.resistance_ohm(1000.0, 70.0) / c.resistance_ohm(1000.0, 20.0) - 1.1965).abs() < 1e-9
        );
    }

    #[test]
    fn i2r_loss_of_a_service_drop() {
        // 2.3 kW for one hour at 230 V → 10 A; 30 m of 16 mm² Cu out and back at 20 °C.
        let t = house(30.0);
        let r = 2.0 * 0.017_241 * 30.0 / 16.0;
        let loss = t.loss_wh(&[2300.0], 3600.0, 20.0);
        assert!((loss - 100.0 * r).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn neutral_current_of_unbalanced_phases() {
        let al = Conductor {
            material: Material::Aluminium,
            cross_section_mm2: 95.0,
        };
        let child = |c| ChildSpec {
            meter: meter("c", AccuracyClass::Class1),
            connection: c,
            service: None,
        };
        let mut t = house(0.0);
        t.three_phase = true;
        t.children = vec![
            child(Connection::PhaseA),
            child(Connection::PhaseB),
            child(Connection::PhaseC),
        ];
        t.feeder = vec![LineSegment {
            length_m: 100.0,
            phase: al,
            neutral: al,
            distribution: LoadDistribution::Lumped,
        }];
        let r = al.resistance_ohm(100.0, 20.0);
        // Balanced 10 A per phase: no neutral current.
        let balanced = t.loss_wh(&[2300.0; 3], 3600.0, 20.0);
        assert!((balanced - 300.0 * r).abs() < 1e-9);
        // Only phase A loaded: the neutral carries the full 10 A.
        let one = t.loss_wh(&[2300.0, 0.0, 0.0], 3600.0, 20.0);
        assert!((one - 200.0 * r).abs() < 1e-9);
    }

    #[test]
    fn transformer_no_load_and_load_losses() {
        // 400 kVA, P0 = 610 W, Pk = 4600 W; half load (200 kVA at unity PF) for one hour.
        let mut t = house(0.0);
        t.children[0].service = None;
        t.transformer = Some(Transformer {
            rated_kva: 400.0,
            no_load_loss_w: 610.0,
            load_loss_w: 4600.0,
        });
        let loss = t.loss_wh(&[200_000.0], 3600.0, 20.0);
        assert!((loss - (610.0 + 4600.0 * 0.25)).abs() < 1e-6, "{loss}");
    }

    /// Eight 15-minute intervals of a 400 W house behind its pole sensor, honest: the pole
    /// reads the house plus the line loss.
    fn honest_quarter_hours(t: &BalanceTopology) -> Vec<IntervalReading> {
        (0..8)
            .map(|k| {
                let house = 100.0;
                IntervalReading {
                    start_s: 900 * k,
                    duration_s: 900.0,
                    observer_wh: Some(house + t.loss_wh(&[house], 900.0, 25.0)),
                    children_wh: vec![Some(house)],
                    conductor_temp_c: None,
                }
            })
            .collect()
    }

    fn interval_alarms(report: &BalanceReport) -> Vec<usize> {
        let alarmed = report.intervals.iter().enumerate().filter(|(_, i)| i.alarm);
        alarmed.map(|(k, _)| k).collect()
    }

    #[test]
    fn energy_moved_across_a_boundary_by_a_late_stamp_is_no_theft() {
        let t = house(20.0);
        let cfg = BalanceConfig::default();
        let mut readings = honest_quarter_hours(&t);
        let threshold = evaluate_balance(&t, None, &readings, &cfg).intervals[3].threshold_wh;
        // The pole's reading at the 3/4 boundary was stamped late: interval 3 looks short of
        // three thresholds' worth of energy and interval 4 has it twice over.
        let moved = 3.0 * threshold;
        *readings[3].observer_wh.as_mut().unwrap() -= moved;
        *readings[4].observer_wh.as_mut().unwrap() += moved;
        let report = evaluate_balance(&t, None, &readings, &cfg);
        assert!(report.intervals[4].residual_wh > report.intervals[4].threshold_wh);
        assert_eq!(interval_alarms(&report), Vec::<usize>::new());
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        // The seed's flat rule judges every interval alone, as published.
        let flat = BalanceConfig {
            mode: BalanceMode::FlatPercent(2.0),
            ..cfg
        };
        assert_eq!(
            interval_alarms(&evaluate_balance(&t, None, &readings, &flat)),
            [4]
        );
    }

    #[test]
    fn energy_missing_for_real_alarms_from_its_first_interval_even_beside_a_late_stamp() {
        let t = house(20.0);
        let cfg = BalanceConfig::default();
        let mut readings = honest_quarter_hours(&t);
        let threshold = evaluate_balance(&t, None, &readings, &cfg).intervals[3].threshold_wh;
        for r in &mut readings[4..] {
            *r.observer_wh.as_mut().unwrap() += 3.0 * threshold;
        }
        assert_eq!(
            interval_alarms(&evaluate_balance(&t, None, &readings, &cfg)),
            [4, 5, 6, 7]
        );
        // A late stamp taking a little energy from interval 3 does not hide the theft after it.
        *readings[3].observer_wh.as_mut().unwrap() -= 0.5 * threshold;
        *readings[4].observer_wh.as_mut().unwrap() += 0.5 * threshold;
        assert_eq!(
            interval_alarms(&evaluate_balance(&t, None, &readings, &cfg)),
            [4, 5, 6, 7]
        );
    }

    #[test]
    fn lookahead_intervals_settle_the_newest_judged_one_and_are_not_reported() {
        let t = house(20.0);
        let mut readings = honest_quarter_hours(&t);
        let cfg = BalanceConfig {
            lookahead_intervals: 1,
            ..BalanceConfig::default()
        };
        let threshold = evaluate_balance(&t, None, &readings, &cfg).intervals[6].threshold_wh;
        *readings[6].observer_wh.as_mut().unwrap() += 3.0 * threshold;
        let report = evaluate_balance(&t, None, &readings, &cfg);
        assert_eq!(report.intervals.len(), 7);
        assert_eq!(report.days[0].intervals, 7);
        assert_eq!(interval_alarms(&report), [6]);
        // The context interval shows the energy was only moved: the alarm is cleared.
        *readings[7].observer_wh.as_mut().unwrap() -= 3.0 * threshold;
        let report = evaluate_balance(&t, None, &readings, &cfg);
        assert_eq!(interval_alarms(&report), Vec::<usize>::new());
    }

    #[test]
    fn class_limits_widen_at_light_load() {
        let c = AccuracyClass::Class1;
        assert!((c.error_wh(1000.0, 2.0, 5.0) - 10.0).abs() < 1e-9);
        assert!((c.error_wh(1000.0, 0.4, 5.0) - 15.0).abs() < 1e-9);
        // Below 0.05 Ib the absolute error at 0.05 Ib is kept.
        assert!((c.error_wh(100.0, 0.125, 5.0) - 1.5 * 2.0).abs() < 1e-9);
    }

    #[test]
    fn flat_rule_reproduces_seed_003() {
        // Seed 003, fig. 6 and 9: line sensor vs house meter; 1.54 % is honest, 17.77 % theft.
        let t = house(5.0);
        let cfg = BalanceConfig {
            mode: BalanceMode::FlatPercent(2.0),
            ..Default::default()
        };
        let reading = |house_wh: f64| IntervalReading {
            start_s: 0,
            duration_s: 3600.0,
            observer_wh: Some(100.0),
            children_wh: vec![Some(house_wh)],
            conductor_temp_c: None,
        };
        let honest = evaluate_balance(&t, None, &[reading(98.46)], &cfg);
        assert!(!honest.intervals[0].alarm);
        let theft = evaluate_balance(&t, None, &[reading(82.23)], &cfg);
        assert!(theft.intervals[0].alarm);
        assert_eq!(theft.findings.len(), 2);
    }

    #[test]
    fn missing_and_negative_readings_are_skipped_with_diagnostics() {
        let t = house(5.0);
        let r = |obs: Option<f64>, child: Option<f64>| IntervalReading {
            start_s: 0,
            duration_s: 900.0,
            observer_wh: obs,
            children_wh: vec![child],
            conductor_temp_c: None,
        };
        let report = evaluate_balance(
            &t,
            None,
            &[
                r(None, Some(1.0)),
                r(Some(-1.0), Some(1.0)),
                r(Some(10.0), Some(10.0)),
            ],
            &BalanceConfig::default(),
        );
        assert_eq!(report.intervals.len(), 1);
        assert_eq!(report.diagnostics.len(), 3, "{:?}", report.diagnostics);
    }
}
