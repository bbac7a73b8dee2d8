//! The reporting-interval accumulator: duration-weighted means of the window quantities over
//! one interval, turned into a `reading` record when the interval is complete.

use metrology::WindowReport;
use schema::{EnergyCounters, Phase, PhaseReading, Reading, TotalReading};

use crate::sources::DeviceMeasurement;

#[derive(Debug, Clone, Copy, Default)]
struct PhaseSums {
    v_rms: f64,
    i_rms: f64,
    p_w: f64,
    q_var: f64,
    s_va: f64,
    v_thd_pct: f64,
    i_thd_pct: f64,
}

/// Sums over the current interval.
#[derive(Debug, Clone, Default)]
pub struct IntervalAccumulator {
    duration_s: f64,
    freq_s: f64,
    freq_weight_s: f64,
    phases: Vec<(Phase, PhaseSums)>,
    total: (f64, f64, f64),
    /// Whether Q and THD are known for every part of the interval (device readings lack them).
    has_q: bool,
    has_thd: bool,
}

impl IntervalAccumulator {
    /// Seconds of signal accumulated so far.
    pub fn duration_s(&self) -> f64 {
        self.duration_s
    }

    fn phase_slot(&mut self, index: usize, phase: Phase) -> &mut PhaseSums {
        if self.phases.len() <= index {
            self.phases.push((phase, PhaseSums::default()));
        }
        &mut self.phases[index].1
    }

    fn start_if_empty(&mut self) {
        if self.duration_s == 0.0 {
            self.has_q = true;
            self.has_thd = true;
        }
    }

    /// Adds one metrology window, weighted by its duration.
    pub fn add_window(&mut self, w: &WindowReport) {
        let d = w.duration_s;
        if !(d.is_finite() && d > 0.0) {
            return;
        }
        self.start_if_empty();
        for (k, p) in w.phases.iter().enumerate() {
            let s = self.phase_slot(k, p.phase.into());
            s.v_rms += p.v_rms * d;
            s.i_rms += p.i_rms * d;
            s.p_w += p.p_w * d;
            s.q_var += p.q_var * d;
            s.s_va += p.s_va * d;
            s.v_thd_pct += p.v_thd_pct * d;
            s.i_thd_pct += p.i_thd_pct * d;
        }
        if w.freq_hz.is_finite() && w.freq_hz > 0.0 {
            self.freq_s += w.freq_hz * d;
            self.freq_weight_s += d;
        }
        self.total.0 += w.total.p_w * d;
        self.total.1 += w.total.q_var * d;
        self.total.2 += w.total.s_va * d;
        self.duration_s += d;
    }

    /// Adds a device measurement that stands for the `duration_s` since the previous one.
    pub fn add_measurement(&mut self, m: &DeviceMeasurement, duration_s: f64) {
        if !(duration_s.is_finite() && duration_s > 0.0) {
            return;
        }
        self.start_if_empty();
        self.has_q = false;
        self.has_thd = false;
        let labels = [Phase::A, Phase::B, Phase::C];
        let (mut p_total, mut s_total) = (0.0, 0.0);
        for (k, p) in m.phases.iter().enumerate().take(3) {
            let s_va = p.v_rms * p.i_rms;
            let s = self.phase_slot(k, labels[k]);
            s.v_rms += p.v_rms * duration_s;
            s.i_rms += p.i_rms * duration_s;
            s.p_w += p.p_w * duration_s;
            s.s_va += s_va * duration_s;
            p_total += p.p_w;
            s_total += s_va;
        }
        if let Some(f) = m.freq_hz.filter(|f| f.is_finite() && *f > 0.0) {
            self.freq_s += f * duration_s;
            self.freq_weight_s += duration_s;
        }
        self.total.0 += p_total * duration_s;
        self.total.2 += s_total * duration_s;
        self.duration_s += duration_s;
    }

    /// The reading for the interval so far (with `counters` at its end), and a fresh start.
    pub fn take(&mut self, counters: EnergyCounters) -> Option<Reading> {
        if self.duration_s <= 0.0 {
            return None;
        }
        let d = self.duration_s;
        let pf = |p: f64, s: f64| {
            if s > 0.0 {
                (p / s).clamp(-1.0, 1.0)
            } else {
                1.0
            }
        };
        let phases = self
            .phases
            .iter()
            .map(|(phase, s)| PhaseReading {
                phase: *phase,
                v_rms: s.v_rms / d,
                i_rms: s.i_rms / d,
                p_w: s.p_w / d,
                q_var: self.has_q.then_some(s.q_var / d),
                s_va: s.s_va / d,
                // Interval PF from interval means: P̄/S̄ (energy-weighted, as billing meters do).
                pf: pf(s.p_w, s.s_va),
                v_thd_pct: self.has_thd.then_some(s.v_thd_pct / d),
                i_thd_pct: self.has_thd.then_some(s.i_thd_pct / d),
            })
            .collect();
        let reading = Reading {
            interval_s: d,
            freq_hz: if self.freq_weight_s > 0.0 {
                self.freq_s / self.freq_weight_s
            } else {
                0.0
            },
            phases,
            total: TotalReading {
                p_w: self.total.0 / d,
                q_var: self.has_q.then_some(self.total.1 / d),
                s_va: self.total.2 / d,
                pf: pf(self.total.0, self.total.2),
            },
            counters,
        };
        *self = Self::default();
        Some(reading)
    }
}
