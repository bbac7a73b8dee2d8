//! Tamper rules over a meter's events and readings (issue 7 item 2; seed 001's cover, magnetic
//! and CT-bypass alarms). A sans-IO state machine per meter: feed [`TamperInput`]s in time
//! order, get [`TamperFinding`]s back; time comes from the inputs, never from a clock.
//!
//! The agent already debounces its own sensors and sends `raised`/`cleared` events; commercial
//! meters polled over DLMS send raw readings or flapping flags. Both paths go through the same
//! [`Debouncer`] here, so a condition must hold for `raise_after_s` before it becomes a finding
//! and be absent for `clear_after_s` before it ends (a flapping contact is one finding, not
//! fifty). Clock tampering is judged against the server's receive time, which a meter cannot
//! move; store-and-forward delays only make readings *late*, so the rules look for meter time
//! running ahead of the server or going backwards, which no delay explains.

use std::collections::VecDeque;

/// How serious a finding is, for ordering work in the case queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// The tamper rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TamperRule {
    CoverOpen,
    MagneticField,
    PhaseNeutralMismatch,
    ReverseFlow,
    CurrentWithoutVoltage,
    RepeatedPowerCycling,
    ClockTampering,
}

impl TamperRule {
    pub fn name(self) -> &'static str {
        match self {
            TamperRule::CoverOpen => "cover_open",
            TamperRule::MagneticField => "magnetic_field",
            TamperRule::PhaseNeutralMismatch => "phase_neutral_mismatch",
            TamperRule::ReverseFlow => "reverse_flow",
            TamperRule::CurrentWithoutVoltage => "current_without_voltage",
            TamperRule::RepeatedPowerCycling => "repeated_power_cycling",
            TamperRule::ClockTampering => "clock_tampering",
        }
    }

    fn severity(self) -> Severity {
        match self {
            TamperRule::MagneticField | TamperRule::CurrentWithoutVoltage => Severity::Critical,
            TamperRule::CoverOpen | TamperRule::PhaseNeutralMismatch | TamperRule::ReverseFlow => {
                Severity::High
            }
            TamperRule::ClockTampering | TamperRule::RepeatedPowerCycling => Severity::Medium,
        }
    }
}

/// A condition reported by the meter itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeterCondition {
    CoverOpen,
    MagneticField,
    CurrentMismatch,
    ReverseEnergy,
    CurrentWithoutVoltage,
    PowerLoss,
}

/// One input, in the order the meter produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum TamperInput {
    /// A condition raised (`active = true`) or cleared by the meter, at meter time `at_s`.
    Condition {
        at_s: i64,
        condition: MeterCondition,
        active: bool,
    },
    /// The meter restarted (after its own power loss).
    Restarted { at_s: i64 },
    /// The meter's wall clock stepped by `delta_s` beyond elapsed monotonic time.
    ClockJump { at_s: i64, delta_s: i64 },
    /// A reading; `received_s` is the server's time of receipt.
    Reading(ReadingSample),
}

/// An instantaneous reading. Phases a, b, c; `None` where the meter does not measure it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReadingSample {
    /// Meter time of the reading, seconds since the Unix epoch.
    pub at_s: i64,
    /// Server receive time, seconds since the Unix epoch.
    pub received_s: i64,
    pub voltage_v: [Option<f64>; 3],
    pub current_a: [Option<f64>; 3],
    pub neutral_current_a: Option<f64>,
    /// Net active power, import positive.
    pub active_power_w: f64,
}

/// Raise and clear delays of one condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DebounceSpec {
    pub raise_after_s: i64,
    pub clear_after_s: i64,
}

/// Tuning of the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TamperConfig {
    /// Whether the customer may export (PV, battery).
    pub export_allowed: bool,
    /// Export above this counts as reverse flow (small negative values at no load are noise).
    pub reverse_power_w: f64,
    /// Residual current |I_N − ΣI| above max(this, `mismatch_ratio` × largest current) counts
    /// as a mismatch.
    pub mismatch_a: f64,
    pub mismatch_ratio: f64,
    pub voltage_missing_v: f64,
    pub current_flowing_a: f64,
    /// Debounce for sensor conditions (cover, magnet) and for measurement conditions.
    pub sensor: DebounceSpec,
    pub electrical: DebounceSpec,
    /// This many power losses or restarts within `power_cycle_window_s` is suspicious.
    pub power_cycles: usize,
    pub power_cycle_window_s: i64,
    /// Clock steps and clock lead larger than this count as tampering.
    pub clock_tolerance_s: i64,
}

impl Default for TamperConfig {
    fn default() -> Self {
        Self {
            export_allowed: false,
            reverse_power_w: 20.0,
            mismatch_a: 0.5,
            mismatch_ratio: 0.1,
            voltage_missing_v: 50.0,
            current_flowing_a: 0.2,
            sensor: DebounceSpec {
                raise_after_s: 0,
                clear_after_s: 60,
            },
            electrical: DebounceSpec {
                raise_after_s: 60,
                clear_after_s: 300,
            },
            power_cycles: 4,
            power_cycle_window_s: 86_400,
            clock_tolerance_s: 120,
        }
    }
}

/// A tamper finding. Emitted once when raised (`end_s = None`) and once more when the condition
/// has ended (`end_s = Some`), so a case can be opened at once and closed with its duration.
#[derive(Debug, Clone, PartialEq)]
pub struct TamperFinding {
    pub meter_id: String,
    pub rule: TamperRule,
    pub severity: Severity,
    pub start_s: i64,
    pub end_s: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DebounceState {
    Idle,
    Pending(i64),
    Active(i64),
    Clearing { since: i64, absent_from: i64 },
}

/// What a debouncer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition is established; it started at this time.
    Raised(i64),
    /// The condition that started at `start` ended at `end`.
    Cleared { start: i64, end: i64 },
}

/// Raise/clear debouncing of one boolean condition observed at irregular times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Debouncer {
    spec: DebounceSpec,
    state: DebounceState,
    present: bool,
}

impl Debouncer {
    pub fn new(spec: DebounceSpec) -> Self {
        Self {
            spec,
            state: DebounceState::Idle,
            present: false,
        }
    }

    /// Observes the condition at time `at_s` (it keeps this value until the next observation).
    pub fn observe(&mut self, present: bool, at_s: i64) -> Vec<Transition> {
        let mut out = self.advance(at_s);
        self.present = present;
        self.state = match (self.state, present) {
            (DebounceState::Idle, true) => DebounceState::Pending(at_s),
            (DebounceState::Pending(_), false) => DebounceState::Idle,
            (DebounceState::Active(since), false) => DebounceState::Clearing {
                since,
                absent_from: at_s,
            },
            (DebounceState::Clearing { since, .. }, true) => DebounceState::Active(since),
            (s, _) => s,
        };
        out.extend(self.advance(at_s));
        out
    }

    /// Moves time forward to `at_s` with the last observed value.
    pub fn advance(&mut self, at_s: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        match self.state {
            DebounceState::Pending(since)
                if self.present && at_s - since >= self.spec.raise_after_s =>
            {
                self.state = DebounceState::Active(since);
                out.push(Transition::Raised(since));
            }
            DebounceState::Clearing { since, absent_from }
                if !self.present && at_s - absent_from >= self.spec.clear_after_s =>
            {
                self.state = DebounceState::Idle;
                out.push(Transition::Cleared {
                    start: since,
                    end: absent_from,
                });
            }
            _ => {}
        }
        out
    }
}

const CONDITIONS: [TamperRule; 5] = [
    TamperRule::CoverOpen,
    TamperRule::MagneticField,
    TamperRule::PhaseNeutralMismatch,
    TamperRule::ReverseFlow,
    TamperRule::CurrentWithoutVoltage,
];

/// The rules for one meter.
#[derive(Debug, Clone)]
pub struct TamperDetector {
    meter_id: String,
    config: TamperConfig,
    debouncers: [Debouncer; 5],
    /// The evidence of each condition's last present observation, for its finding's message.
    details: [String; 5],
    power_events: VecDeque<i64>,
    last_cycle_finding: Option<i64>,
    last_reading_at: Option<i64>,
    clock_finding_open: bool,
}

impl TamperDetector {
    pub fn new(meter_id: impl Into<String>, config: TamperConfig) -> Self {
        let d = |rule: TamperRule| {
            Debouncer::new(match rule {
                TamperRule::CoverOpen | TamperRule::MagneticField => config.sensor,
                _ => config.electrical,
            })
        };
        Self {
            meter_id: meter_id.into(),
            config,
            debouncers: CONDITIONS.map(d),
            details: Default::default(),
            power_events: VecDeque::new(),
            last_cycle_finding: None,
            last_reading_at: None,
            clock_finding_open: false,
        }
    }

    fn finding(
        &self,
        rule: TamperRule,
        start_s: i64,
        end_s: Option<i64>,
        message: String,
    ) -> TamperFinding {
        TamperFinding {
            meter_id: self.meter_id.clone(),
            rule,
            severity: rule.severity(),
            start_s,
            end_s,
            message,
        }
    }

    fn transitions(&self, rule: TamperRule, ts: Vec<Transition>, out: &mut Vec<TamperFinding>) {
        let i = CONDITIONS
            .iter()
            .position(|r| *r == rule)
            .expect("rule has a debouncer");
        let detail = &self.details[i];
        for t in ts {
            let what = rule.name().replace('_', " ");
            out.push(match t {
                Transition::Raised(start) => {
                    self.finding(rule, start, None, format!("{what}{detail}"))
                }
                Transition::Cleared { start, end } => self.finding(
                    rule,
                    start,
                    Some(end),
                    format!("{what} ended after {} s", end - start),
                ),
            });
        }
    }

    fn observe(
        &mut self,
        rule: TamperRule,
        present: bool,
        at_s: i64,
        detail: &str,
        out: &mut Vec<TamperFinding>,
    ) {
        let i = CONDITIONS
            .iter()
            .position(|r| *r == rule)
            .expect("rule has a debouncer");
        if present {
            detail.clone_into(&mut self.details[i]);
        }
        let ts = self.debouncers[i].observe(present, at_s);
        self.transitions(rule, ts, out);
    }

    /// Feeds one input; returns the findings it caused.
    pub fn push(&mut self, input: &TamperInput) -> Vec<TamperFinding> {
        let mut out = Vec::new();
        let at_s = match input {
            TamperInput::Condition { at_s, .. }
            | TamperInput::Restarted { at_s }
            | TamperInput::ClockJump { at_s, .. } => *at_s,
            TamperInput::Reading(r) => r.at_s,
        };
        for (i, rule) in CONDITIONS.iter().enumerate() {
            let ts = self.debouncers[i].advance(at_s);
            self.transitions(*rule, ts, &mut out);
        }
        match *input {
            TamperInput::Condition {
                at_s,
                condition,
                active,
            } => {
                let rule = match condition {
                    MeterCondition::CoverOpen => Some(TamperRule::CoverOpen),
                    MeterCondition::MagneticField => Some(TamperRule::MagneticField),
                    MeterCondition::CurrentMismatch => Some(TamperRule::PhaseNeutralMismatch),
                    MeterCondition::ReverseEnergy => {
                        // A meter that may export reports reverse energy as normal operation.
                        (!self.config.export_allowed).then_some(TamperRule::ReverseFlow)
                    }
                    MeterCondition::CurrentWithoutVoltage => {
                        Some(TamperRule::CurrentWithoutVoltage)
                    }
                    MeterCondition::PowerLoss => {
                        if active {
                            self.power_event(at_s, &mut out);
                        }
                        None
                    }
                };
                if let Some(rule) = rule {
                    self.observe(rule, active, at_s, " reported by the meter", &mut out);
                }
            }
            TamperInput::Restarted { at_s } => self.power_event(at_s, &mut out),
            TamperInput::ClockJump { at_s, delta_s } => {
                if delta_s.abs() > self.config.clock_tolerance_s {
                    out.push(self.finding(
                        TamperRule::ClockTampering,
                        at_s,
                        Some(at_s),
                        format!("meter clock stepped by {delta_s} s"),
                    ));
                }
            }
            TamperInput::Reading(r) => self.reading(&r, &mut out),
        }
        out
    }

    fn power_event(&mut self, at_s: i64, out: &mut Vec<TamperFinding>) {
        let window = self.config.power_cycle_window_s;
        self.power_events.push_back(at_s);
        while self
            .power_events
            .front()
            .is_some_and(|&t| at_s - t > window)
        {
            self.power_events.pop_front();
        }
        let recently_reported = self.last_cycle_finding.is_some_and(|t| at_s - t <= window);
        if self.power_events.len() >= self.config.power_cycles && !recently_reported {
            let first = self.power_events.front().copied().unwrap_or(at_s);
            self.last_cycle_finding = Some(at_s);
            out.push(self.finding(
                TamperRule::RepeatedPowerCycling,
                first,
                Some(at_s),
                format!(
                    "{} power interruptions within {} h",
                    self.power_events.len(),
                    window / 3600
                ),
            ));
        }
    }

    fn reading(&mut self, r: &ReadingSample, out: &mut Vec<TamperFinding>) {
        let cfg = self.config;
        // Phase/neutral mismatch: single-phase meters measure both conductors; for three
        // phases the neutral carries the phasor sum, so only single-phase readings are judged.
        let phases: Vec<f64> = r.current_a.iter().flatten().copied().collect();
        if let (Some(i_n), [i_ph]) = (r.neutral_current_a, phases.as_slice()) {
            let limit = cfg.mismatch_a.max(cfg.mismatch_ratio * i_ph.max(i_n));
            let residual = (i_n - i_ph).abs();
            let detail = format!(" (phase {i_ph:.2} A, neutral {i_n:.2} A)");
            self.observe(
                TamperRule::PhaseNeutralMismatch,
                residual > limit,
                r.at_s,
                &detail,
                out,
            );
        }
        if !cfg.export_allowed {
            let reverse = r.active_power_w < -cfg.reverse_power_w;
            let detail = format!(
                " ({:.0} W exported, customer not allowed to export)",
                -r.active_power_w
            );
            self.observe(TamperRule::ReverseFlow, reverse, r.at_s, &detail, out);
        }
        let mut cwv = None;
        for (p, (v, i)) in r.voltage_v.iter().zip(&r.current_a).enumerate() {
            if let (Some(v), Some(i)) = (v, i)
                && *v < cfg.voltage_missing_v
                && *i > cfg.current_flowing_a
            {
                cwv = Some((p, *v, *i));
            }
        }
        let detail = cwv.map_or(String::new(), |(p, v, i)| {
            format!(" on phase {} ({i:.2} A at {v:.0} V)", ['a', 'b', 'c'][p])
        });
        if r.voltage_v.iter().any(Option::is_some) {
            self.observe(
                TamperRule::CurrentWithoutVoltage,
                cwv.is_some(),
                r.at_s,
                &detail,
                out,
            );
        }
        // Clock: ahead of the server, or going backwards between readings.
        let ahead = r.at_s - r.received_s;
        let backwards = self.last_reading_at.map(|t| t - r.at_s).unwrap_or(0);
        let suspicious = ahead > cfg.clock_tolerance_s || backwards > cfg.clock_tolerance_s;
        if suspicious && !self.clock_finding_open {
            self.clock_finding_open = true;
            let message = if ahead > cfg.clock_tolerance_s {
                format!("meter clock {ahead} s ahead of the server's receive time")
            } else {
                format!("meter time went back {backwards} s between readings")
            };
            out.push(self.finding(TamperRule::ClockTampering, r.at_s, None, message));
        } else if !suspicious && self.clock_finding_open && ahead <= 0 {
            self.clock_finding_open = false;
        }
        self.last_reading_at = Some(self.last_reading_at.map_or(r.at_s, |t| t.max(r.at_s)));
    }
}

/// Runs the rules over a whole stream (convenience over [`TamperDetector`]).
pub fn detect_tamper(
    meter_id: &str,
    config: TamperConfig,
    inputs: &[TamperInput],
) -> Vec<TamperFinding> {
    let mut d = TamperDetector::new(meter_id, config);
    inputs.iter().flat_map(|i| d.push(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_s: i64, v: f64, i: f64, n: Option<f64>, p: f64) -> TamperInput {
        TamperInput::Reading(ReadingSample {
            at_s,
            received_s: at_s + 5,
            voltage_v: [Some(v), None, None],
            current_a: [Some(i), None, None],
            neutral_current_a: n,
            active_power_w: p,
        })
    }

    #[test]
    fn flapping_cover_is_one_finding() {
        let mut inputs = Vec::new();
        for k in 0..10 {
            inputs.push(TamperInput::Condition {
                at_s: 100 + 10 * k,
                condition: MeterCondition::CoverOpen,
                active: true,
            });
            inputs.push(TamperInput::Condition {
                at_s: 105 + 10 * k,
                condition: MeterCondition::CoverOpen,
                active: false,
            });
        }
        inputs.push(reading(1000, 230.0, 1.0, None, 230.0));
        let f = detect_tamper("m1", TamperConfig::default(), &inputs);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].rule, TamperRule::CoverOpen);
        assert_eq!(f[0].end_s, None);
        assert_eq!(f[1].end_s, Some(195));
        assert_eq!(f[0].severity, Severity::High);
    }

    #[test]
    fn magnetic_field_is_critical() {
        let f = detect_tamper(
            "m1",
            TamperConfig::default(),
            &[TamperInput::Condition {
                at_s: 5,
                condition: MeterCondition::MagneticField,
                active: true,
            }],
        );
        assert_eq!(f[0].rule, TamperRule::MagneticField);
        assert_eq!(f[0].severity, Severity::Critical);
    }

    #[test]
    fn neutral_bypass_needs_to_persist() {
        // A 30 s transient is ignored, a 5-minute mismatch is raised.
        let mut inputs: Vec<TamperInput> = (0..4)
            .map(|k| reading(k * 10, 230.0, 10.0, Some(4.0), 2300.0))
            .collect();
        inputs.extend((4..10).map(|k| reading(k * 10, 230.0, 10.0, Some(10.1), 2300.0)));
        assert!(detect_tamper("m", TamperConfig::default(), &inputs).is_empty());
        let inputs: Vec<TamperInput> = (0..30)
            .map(|k| reading(k * 10, 230.0, 10.0, Some(4.0), 2300.0))
            .collect();
        let f = detect_tamper("m", TamperConfig::default(), &inputs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, TamperRule::PhaseNeutralMismatch);
        assert_eq!(f[0].start_s, 0);
    }

    #[test]
    fn reverse_flow_only_for_non_exporters() {
        let inputs: Vec<TamperInput> = (0..20)
            .map(|k| reading(k * 30, 230.0, 5.0, None, -1000.0))
            .collect();
        let f = detect_tamper("m", TamperConfig::default(), &inputs);
        assert_eq!(
            f.iter()
                .filter(|f| f.rule == TamperRule::ReverseFlow)
                .count(),
            1
        );
        let pv = TamperConfig {
            export_allowed: true,
            ..Default::default()
        };
        assert!(detect_tamper("m", pv, &inputs).is_empty());
    }

    #[test]
    fn current_without_voltage() {
        let inputs: Vec<TamperInput> = (0..20)
            .map(|k| reading(k * 30, 3.0, 8.0, None, 0.0))
            .collect();
        let f = detect_tamper("m", TamperConfig::default(), &inputs);
        assert_eq!(f[0].rule, TamperRule::CurrentWithoutVoltage);
        assert!(f[0].message.contains("phase a"), "{}", f[0].message);
    }

    #[test]
    fn power_cycling_and_clock() {
        let mut inputs: Vec<TamperInput> = (0..5)
            .map(|k| TamperInput::Restarted { at_s: k * 600 })
            .collect();
        inputs.push(TamperInput::ClockJump {
            at_s: 4000,
            delta_s: -3600,
        });
        inputs.push(TamperInput::ClockJump {
            at_s: 4100,
            delta_s: 1,
        });
        let f = detect_tamper("m", TamperConfig::default(), &inputs);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].rule, TamperRule::RepeatedPowerCycling);
        assert!(f[0].message.starts_with("4 power"), "{}", f[0].message);
        assert_eq!(f[1].rule, TamperRule::ClockTampering);
        // A late reading is fine; a reading from the future is not.
        let mut late = ReadingSample {
            at_s: 1000,
            received_s: 9000,
            ..Default::default()
        };
        assert!(
            detect_tamper("m", TamperConfig::default(), &[TamperInput::Reading(late)]).is_empty()
        );
        late.received_s = 100;
        let f = detect_tamper("m", TamperConfig::default(), &[TamperInput::Reading(late)]);
        assert_eq!(f[0].rule, TamperRule::ClockTampering);
    }
}
