//! Configuration of the `simulator` source and the scenario file format.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[source] type = "simulator"`: a meter measuring modelled loads.
///
/// ```toml
/// [source]
/// type = "simulator"
/// scenario = "scenarios/bypass-theft.toml"
/// position = "house"
/// pace = "real_time"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// The scenario file (TOML, see [`Scenario`]). Relative paths are relative to the agent's
    /// working directory.
    pub scenario: PathBuf,
    /// Where this meter sits: the customer's `house` meter, or the utility's `observer` meter
    /// on the line before the house, which also sees loads the scenario marks as bypassing the
    /// house meter (seed 003's theft indicator compares the two).
    #[serde(default)]
    pub position: MeterPosition,
    /// Real time (a chunk is released when the wall clock reaches its end) or as fast as the
    /// CPU allows (tests, load generation).
    #[serde(default)]
    pub pace: Pace,
    /// Length of one chunk in milliseconds. Longer chunks cost less per sample.
    #[serde(default = "default_chunk_ms")]
    pub chunk_ms: u32,
    /// Overrides the scenario's seed, so a fleet of meters can share one scenario file and
    /// still differ (noise, clouds).
    #[serde(default)]
    pub seed: Option<u64>,
}

const fn default_chunk_ms() -> u32 {
    200
}

/// Position of a simulated meter relative to a bypass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterPosition {
    /// The customer's meter: bypassed loads are invisible to it.
    #[default]
    House,
    /// The utility's meter upstream of the house: it sees everything.
    Observer,
}

/// How fast simulated time runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// One simulated second per wall-clock second.
    #[default]
    RealTime,
    /// No waiting at all.
    AsFastAsPossible,
}

/// A scenario file: the supply, the loads and their schedules, tamper actions, noise.
///
/// ```toml
/// seed = 7
/// phases = 3
/// sample_rate_hz = 8000
/// start_time_of_day_s = 43200
///
/// [supply]
/// voltage_v = 230
/// frequency_hz = 50
/// frequency_drift_hz = 0.05
///
/// [[load]]
/// name = "water heater"
/// kind = { type = "resistive", power_w = 2000 }
/// phase = "a"
/// on = [[0, 600], [1200, 1800]]
///
/// [[load]]
/// name = "bypassed heater"
/// kind = { type = "resistive", power_w = 1500 }
/// phase = "b"
/// bypass = "full"
///
/// [[tamper]]
/// kind = "magnetic"
/// from_s = 300
/// to_s = 360
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice (noise, clouds, jitter): the same seed gives the same samples.
    #[serde(default)]
    pub seed: u64,
    /// 1 (single-phase `v,i`) or 3 (`va,vb,vc,ia,ib,ic,in`, the neutral included so CT bypass
    /// can be seen).
    #[serde(default = "default_phases")]
    pub phases: u8,
    /// Samples per second per channel.
    #[serde(default = "default_sample_rate_hz")]
    pub sample_rate_hz: f64,
    /// Simulated duration in seconds; without it the scenario runs forever (loads' schedules
    /// repeat every `repeat_s`, if set).
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Schedules repeat with this period in seconds (e.g. 86400 for a daily pattern).
    #[serde(default)]
    pub repeat_s: Option<f64>,
    /// Time of day in seconds at which the simulation starts; drives the PV irradiance curve.
    #[serde(default = "default_start_time_of_day_s")]
    pub start_time_of_day_s: f64,
    /// The supply voltage.
    #[serde(default)]
    pub supply: Supply,
    /// Measurement noise.
    #[serde(default)]
    pub noise: Noise,
    /// The loads behind the meter.
    #[serde(default, rename = "load")]
    pub loads: Vec<Load>,
    /// Tamper actions.
    #[serde(default, rename = "tamper")]
    pub tampers: Vec<Tamper>,
}

const fn default_phases() -> u8 {
    1
}
const fn default_sample_rate_hz() -> f64 {
    8000.0
}
const fn default_start_time_of_day_s() -> f64 {
    12.0 * 3600.0
}

/// The supply voltage at the meter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supply {
    /// Nominal phase-to-neutral RMS voltage in volts.
    #[serde(default = "default_voltage_v")]
    pub voltage_v: f64,
    /// Nominal frequency in hertz (50 or 60).
    #[serde(default = "default_frequency_hz")]
    pub frequency_hz: f64,
    /// Peak deviation of the slow frequency drift in hertz (a sine with `drift_period_s`).
    #[serde(default)]
    pub frequency_drift_hz: f64,
    /// Period of the frequency drift in seconds.
    #[serde(default = "default_drift_period_s")]
    pub drift_period_s: f64,
    /// Background voltage harmonics as `[order, fraction of the fundamental]` pairs.
    #[serde(default)]
    pub harmonics: Vec<(u32, f64)>,
    /// Outages: `[from_s, to_s]` intervals with no voltage (and no current).
    #[serde(default)]
    pub outages: Vec<(f64, f64)>,
}

const fn default_voltage_v() -> f64 {
    230.0
}
const fn default_frequency_hz() -> f64 {
    50.0
}
const fn default_drift_period_s() -> f64 {
    600.0
}

impl Default for Supply {
    fn default() -> Supply {
        Supply {
            voltage_v: default_voltage_v(),
            frequency_hz: default_frequency_hz(),
            frequency_drift_hz: 0.0,
            drift_period_s: default_drift_period_s(),
            harmonics: Vec::new(),
            outages: Vec::new(),
        }
    }
}

/// Gaussian measurement noise added to every sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// Standard deviation of the voltage noise in volts.
    #[serde(default)]
    pub voltage_v: f64,
    /// Standard deviation of the current noise in amperes.
    #[serde(default)]
    pub current_a: f64,
}

/// One load (or generator) behind the meter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Name, for logs.
    pub name: String,
    /// What it is electrically.
    pub kind: LoadKind,
    /// The phase it is wired to (`a`, `b`, `c`), or `abc` for a balanced three-phase load.
    #[serde(default)]
    pub phase: PhaseSel,
    /// `[from_s, to_s]` intervals in which it is on; always on when empty.
    #[serde(default)]
    pub on: Vec<(f64, f64)>,
    /// Whether it is wired around the house meter.
    #[serde(default)]
    pub bypass: Bypass,
}

/// Which phase(s) a load uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseSel {
    /// Phase a (the only phase of a single-phase meter).
    #[default]
    A,
    /// Phase b.
    B,
    /// Phase c.
    C,
    /// All three, balanced (the power is split equally).
    Abc,
}

/// How a load is connected relative to the house meter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bypass {
    /// Through the meter: both meters see it.
    #[default]
    None,
    /// Phase and neutral both taken before the meter: only the observer sees it (seed 003).
    Full,
    /// Phase taken before the meter, neutral returned through it: the house meter's phase CT
    /// misses it but its neutral CT does not (phase/neutral mismatch).
    PhaseOnly,
}

/// The electrical behaviour of a load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadKind {
    /// A heater or lamp: current in phase with the voltage.
    Resistive {
        /// Power at nominal voltage in watts.
        power_w: f64,
    },
    /// An induction motor: lagging current, and an inrush at each start.
    Motor {
        /// Running active power in watts.
        power_w: f64,
        /// Running power factor (lagging).
        #[serde(default = "default_motor_pf")]
        pf: f64,
        /// Start-up current as a multiple of the running current.
        #[serde(default = "default_inrush_factor")]
        inrush_factor: f64,
        /// Time constant of the inrush decay in seconds.
        #[serde(default = "default_inrush_s")]
        inrush_s: f64,
    },
    /// A rectifier / switched-mode supply: current pulses rich in odd harmonics.
    Rectifier {
        /// Active power in watts.
        power_w: f64,
        /// Current THD as a fraction (e.g. 0.8 for 80 %); spread over the odd harmonics 3..15
        /// with amplitudes falling as 1/n.
        #[serde(default = "default_rectifier_thd")]
        thd: f64,
    },
    /// A PV inverter exporting along a daily irradiance curve with clouds.
    Pv {
        /// Output at full sun in watts.
        peak_power_w: f64,
        /// Sunrise, seconds after midnight.
        #[serde(default = "default_sunrise_s")]
        sunrise_s: f64,
        /// Sunset, seconds after midnight.
        #[serde(default = "default_sunset_s")]
        sunset_s: f64,
        /// Fraction of the time clouds cover the sun (0 = clear sky).
        #[serde(default)]
        cloudiness: f64,
    },
    /// A battery inverter: charging (import) or discharging (export) at a set power.
    Battery {
        /// Power in watts: positive charges (import), negative discharges (export).
        power_w: f64,
    },
    /// An EV charger: constant power with a slow ramp at start.
    EvCharger {
        /// Charging power in watts.
        power_w: f64,
        /// Ramp-up time in seconds.
        #[serde(default = "default_ev_ramp_s")]
        ramp_s: f64,
    },
}

const fn default_motor_pf() -> f64 {
    0.8
}
const fn default_inrush_factor() -> f64 {
    6.0
}
const fn default_inrush_s() -> f64 {
    0.3
}
const fn default_rectifier_thd() -> f64 {
    0.8
}
const fn default_sunrise_s() -> f64 {
    6.0 * 3600.0
}
const fn default_sunset_s() -> f64 {
    20.0 * 3600.0
}
const fn default_ev_ramp_s() -> f64 {
    5.0
}

/// A tamper action during `[from_s, to_s)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tamper {
    /// What is done to the meter.
    pub kind: TamperKind,
    /// Start, seconds of simulated time.
    pub from_s: f64,
    /// End, seconds of simulated time.
    pub to_s: f64,
    /// Phase affected (`reversed_ct`, `magnetic`); all phases when absent.
    #[serde(default)]
    pub phase: Option<PhaseSel>,
    /// For `magnetic`: the fraction of the true current the saturated CT still reports.
    #[serde(default = "default_magnetic_current_factor")]
    pub current_factor: f64,
}

const fn default_magnetic_current_factor() -> f64 {
    0.3
}

/// Kinds of tamper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A magnet on the meter: the magnetic sensor trips and the CT under-reads.
    Magnetic,
    /// The cover is opened: the cover switch trips.
    CoverOpen,
    /// A current transformer is turned around: its current is inverted.
    ReversedCt,
}
