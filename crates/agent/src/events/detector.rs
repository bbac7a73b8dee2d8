//! The tamper and fault rules, with per-condition debouncing. No I/O and no clock: the caller
//! passes monotonic time (`now_ms`) for durations and wall time (`now_unix_ms`) for the events.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Condition, EventKind, MeterEvent};
use crate::sources::{Signal, SignalKind};

/// How long a condition must hold before it is raised, and be gone before it is cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debounce {
    /// Milliseconds the condition must hold continuously before it is raised.
    pub raise_after_ms: u64,
    /// Milliseconds it must be absent continuously before it is cleared.
    pub clear_after_ms: u64,
}

/// Configuration of the tamper and fault rules (`[events]` section of the agent config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TamperConfig {
    /// Whether this meter may export energy (a PV or battery installation). When false, a net
    /// export above `reverse_power_w` raises `reverse_energy`.
    #[serde(default)]
    pub export_allowed: bool,
    /// Export power in watts above which energy counts as flowing in reverse. Small negative
    /// readings at no load are measurement noise, not tampering.
    #[serde(default = "default_reverse_power_w")]
    pub reverse_power_w: f64,
    /// Absolute residual current (neutral minus the sum of phases) in amperes above which the
    /// currents count as mismatched.
    #[serde(default = "default_mismatch_a")]
    pub mismatch_a: f64,
    /// Residual current as a fraction of the largest phase current above which the currents
    /// count as mismatched; the larger of this and `mismatch_a` applies, so CT tolerances at high
    /// load do not raise false alarms.
    #[serde(default = "default_mismatch_ratio")]
    pub mismatch_ratio: f64,
    /// Phase voltage in volts below which the voltage counts as missing.
    #[serde(default = "default_voltage_missing_v")]
    pub voltage_missing_v: f64,
    /// Phase current in amperes above which current counts as flowing.
    #[serde(default = "default_current_flowing_a")]
    pub current_flowing_a: f64,
    /// Wall-clock steps larger than this (milliseconds, beyond elapsed monotonic time) are
    /// reported as clock jumps.
    #[serde(default = "default_clock_jump_ms")]
    pub clock_jump_ms: u64,
    /// Debounce for the discrete inputs (cover switch, magnetic sensor): contacts bounce.
    #[serde(default = "default_signal_debounce")]
    pub signal_debounce: Debounce,
    /// Debounce for the rules on measurements (mismatch, reverse energy, current without
    /// voltage): one odd window during a switching transient must not raise an alarm.
    #[serde(default = "default_electrical_debounce")]
    pub electrical_debounce: Debounce,
    /// Debounce for power loss: short dips are power quality, not an outage.
    #[serde(default = "default_power_loss_debounce")]
    pub power_loss_debounce: Debounce,
}

const fn default_reverse_power_w() -> f64 {
    20.0
}
const fn default_mismatch_a() -> f64 {
    0.5
}
const fn default_mismatch_ratio() -> f64 {
    0.1
}
const fn default_voltage_missing_v() -> f64 {
    50.0
}
const fn default_current_flowing_a() -> f64 {
    0.2
}
const fn default_clock_jump_ms() -> u64 {
    2_000
}
const fn default_signal_debounce() -> Debounce {
    Debounce {
        raise_after_ms: 200,
        clear_after_ms: 1_000,
    }
}
const fn default_electrical_debounce() -> Debounce {
    Debounce {
        raise_after_ms: 2_000,
        clear_after_ms: 5_000,
    }
}
const fn default_power_loss_debounce() -> Debounce {
    Debounce {
        raise_after_ms: 500,
        clear_after_ms: 1_000,
    }
}

impl Default for TamperConfig {
    fn default() -> TamperConfig {
        TamperConfig {
            export_allowed: false,
            reverse_power_w: default_reverse_power_w(),
            mismatch_a: default_mismatch_a(),
            mismatch_ratio: default_mismatch_ratio(),
            voltage_missing_v: default_voltage_missing_v(),
            current_flowing_a: default_current_flowing_a(),
            clock_jump_ms: default_clock_jump_ms(),
            signal_debounce: default_signal_debounce(),
            electrical_debounce: default_electrical_debounce(),
            power_loss_debounce: default_power_loss_debounce(),
        }
    }
}

/// One phase of an [`ElectricalSnapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSnapshot {
    /// RMS voltage in volts.
    pub v_rms: f64,
    /// RMS current in amperes.
    pub i_rms: f64,
    /// Active power in watts, import positive.
    pub p_w: f64,
}

/// The measured quantities the rules look at: one per metrology window or device reading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ElectricalSnapshot {
    /// Per phase (1 or 3 entries).
    pub phases: Vec<PhaseSnapshot>,
    /// RMS of the residual current `i_n + i_a + i_b + i_c` over the same interval, when the
    /// source measures the neutral (see [`super::ResidualCurrent`]).
    pub residual_i_rms: Option<f64>,
}

impl ElectricalSnapshot {
    /// Total active power in watts.
    pub fn total_p_w(&self) -> f64 {
        self.phases.iter().map(|p| p.p_w).sum()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Debouncer {
    active: bool,
    pending_since_ms: Option<u64>,
}

impl Debouncer {
    /// Feed the raw presence at `now_ms`; returns the new debounced level when it flips.
    fn update(&mut self, now_ms: u64, present: bool, d: Debounce) -> Option<bool> {
        if present == self.active {
            self.pending_since_ms = None;
            return None;
        }
        let since = *self.pending_since_ms.get_or_insert(now_ms);
        let needed = if present {
            d.raise_after_ms
        } else {
            d.clear_after_ms
        };
        if now_ms.saturating_sub(since) >= needed {
            self.active = present;
            self.pending_since_ms = None;
            Some(present)
        } else {
            None
        }
    }
}

/// The rules: feed inputs, get debounced events.
#[derive(Clone, Debug)]
pub struct TamperDetector {
    config: TamperConfig,
    conditions: HashMap<Condition, Debouncer>,
    cover_open: bool,
    magnetic_field: bool,
    last_clock: Option<(u64, i64)>,
}

impl TamperDetector {
    /// A detector with no condition active.
    pub fn new(config: TamperConfig) -> TamperDetector {
        TamperDetector {
            config,
            conditions: HashMap::new(),
            cover_open: false,
            magnetic_field: false,
            last_clock: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TamperConfig {
        &self.config
    }

    /// The conditions currently raised.
    pub fn active(&self) -> Vec<Condition> {
        let mut v: Vec<Condition> = self
            .conditions
            .iter()
            .filter(|(_, d)| d.active)
            .map(|(c, _)| *c)
            .collect();
        v.sort_by_key(|c| format!("{c:?}"));
        v
    }

    /// A discrete input changed level. Returns the events due now; a level that has not held
    /// long enough yet is raised by a later [`TamperDetector::tick`].
    pub fn signal(&mut self, now_ms: u64, now_unix_ms: i64, signal: Signal) -> Vec<MeterEvent> {
        match signal.kind {
            SignalKind::CoverOpen => self.cover_open = signal.active,
            SignalKind::MagneticField => self.magnetic_field = signal.active,
            // The button drives the relay (manual triggers), not a tamper rule.
            SignalKind::ManualButton => {}
        }
        self.tick(now_ms, now_unix_ms)
    }

    /// Re-evaluate the discrete inputs' debounce at `now_ms`; call it periodically (every
    /// window is enough) so that a level held without further edges is raised on time.
    pub fn tick(&mut self, now_ms: u64, now_unix_ms: i64) -> Vec<MeterEvent> {
        let mut out = Vec::new();
        let d = self.config.signal_debounce;
        let (cover, magnetic) = (self.cover_open, self.magnetic_field);
        self.update(
            &mut out,
            now_ms,
            now_unix_ms,
            Condition::CoverOpen,
            cover,
            None,
            d,
        );
        self.update(
            &mut out,
            now_ms,
            now_unix_ms,
            Condition::MagneticField,
            magnetic,
            None,
            d,
        );
        out
    }

    /// Apply the measurement rules to a snapshot taken at `now_ms`.
    pub fn electrical(
        &mut self,
        now_ms: u64,
        now_unix_ms: i64,
        snapshot: &ElectricalSnapshot,
    ) -> Vec<MeterEvent> {
        let mut out = self.tick(now_ms, now_unix_ms);
        let c = self.config.clone();
        let ed = c.electrical_debounce;

        // Power loss: every phase voltage missing. While the supply is off, the other
        // measurement rules have nothing to judge, so they are not fed (their pending
        // timers keep their state).
        let max_v = snapshot
            .phases
            .iter()
            .map(|p| p.v_rms)
            .fold(0.0_f64, f64::max);
        let lost = !snapshot.phases.is_empty() && max_v < c.voltage_missing_v;
        self.update(
            &mut out,
            now_ms,
            now_unix_ms,
            Condition::PowerLoss,
            lost,
            Some(max_v),
            c.power_loss_debounce,
        );

        // Current without voltage, per phase. With all voltages gone, a current is still
        // suspicious (the voltage links of every phase cut), so this rule runs during power loss.
        for (n, p) in snapshot.phases.iter().enumerate() {
            let present = p.v_rms < c.voltage_missing_v && p.i_rms > c.current_flowing_a;
            let cond = Condition::CurrentWithoutVoltage { phase: n as u8 };
            self.update(
                &mut out,
                now_ms,
                now_unix_ms,
                cond,
                present,
                Some(p.i_rms),
                ed,
            );
        }
        if lost {
            return out;
        }

        // Reverse energy on an import-only meter: the net active power is export.
        if !c.export_allowed {
            let p = snapshot.total_p_w();
            let present = p < -c.reverse_power_w;
            self.update(
                &mut out,
                now_ms,
                now_unix_ms,
                Condition::ReverseEnergy,
                present,
                Some(p),
                ed,
            );
        }

        // Phase/neutral mismatch (only when the source measures the neutral).
        if let Some(residual) = snapshot.residual_i_rms {
            let max_i = snapshot
                .phases
                .iter()
                .map(|p| p.i_rms)
                .fold(0.0_f64, f64::max);
            let limit = c.mismatch_a.max(c.mismatch_ratio * max_i);
            let present = residual > limit;
            self.update(
                &mut out,
                now_ms,
                now_unix_ms,
                Condition::CurrentMismatch,
                present,
                Some(residual),
                ed,
            );
        }
        out
    }

    /// Compare the wall clock against the monotonic clock. A step larger than `clock_jump_ms`
    /// is a [`EventKind::ClockJump`]; slow drift (NTP slewing) is not, because each call
    /// compares only against the previous one.
    pub fn clock(&mut self, now_ms: u64, now_unix_ms: i64) -> Option<MeterEvent> {
        let previous = self.last_clock.replace((now_ms, now_unix_ms));
        let (then_ms, then_unix_ms) = previous?;
        let elapsed_ms = i64::try_from(now_ms.saturating_sub(then_ms)).unwrap_or(i64::MAX);
        let delta_ms = now_unix_ms
            .saturating_sub(then_unix_ms)
            .saturating_sub(elapsed_ms);
        (delta_ms.unsigned_abs() > self.config.clock_jump_ms).then_some(MeterEvent {
            at_unix_ms: now_unix_ms,
            kind: EventKind::ClockJump { delta_ms },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        out: &mut Vec<MeterEvent>,
        now_ms: u64,
        now_unix_ms: i64,
        condition: Condition,
        present: bool,
        value: Option<f64>,
        debounce: Debounce,
    ) {
        let deb = self.conditions.entry(condition).or_default();
        match deb.update(now_ms, present, debounce) {
            Some(true) => out.push(MeterEvent {
                at_unix_ms: now_unix_ms,
                kind: EventKind::Raised { condition, value },
            }),
            Some(false) => out.push(MeterEvent {
                at_unix_ms: now_unix_ms,
                kind: EventKind::Cleared { condition },
            }),
            None => {}
        }
    }
}
