//! What the analyzer reports per measurement window (the quantities of DESIGN §3.2).

use core::ops::Deref;

/// Highest harmonic order reported (IEC 61000-4-7 measures up to the 50th).
pub const MAX_HARMONIC: usize = 50;

/// Harmonic subgroup RMS values (IEC 61000-4-7 §3.3.2), indexed by order: `[0]` is the DC
/// component (the window mean, signed), `[1]` the fundamental subgroup, up to `[50]`.
/// All zero when harmonics are disabled in the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Harmonics(pub [f64; MAX_HARMONIC + 1]);

impl Harmonics {
    /// All orders zero.
    pub const ZERO: Self = Self([0.0; MAX_HARMONIC + 1]);
}

impl Default for Harmonics {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Deref for Harmonics {
    type Target = [f64; MAX_HARMONIC + 1];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The harmonic orders' own phasors: RMS phasors of the centre bin of each order (bin h·c of
/// the window's c-cycle spectrum; IEC 61000-4-7's harmonic component proper, without the two
/// neighbouring bins its subgroup adds), with the cosine reference at the window start like
/// [`PhaseReport::v1_phase_deg`]. Indexed by order: `[0]` is unused (0), `[1]` is the
/// fundamental, up to `[50]`. All zero when harmonics are disabled and for orders at or above
/// half the sample rate.
///
/// A window starts on a cycle boundary of the fundamental, so for a steady signal the angles
/// repeat from window to window; the angle of order h relative to the fundamental voltage,
/// `angle_deg(h) − h·v1_phase_deg`, describes the waveform's shape independently of where the
/// window starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HarmonicPhasors {
    /// Real parts (RMS).
    pub re: [f64; MAX_HARMONIC + 1],
    /// Imaginary parts (RMS).
    pub im: [f64; MAX_HARMONIC + 1],
}

impl HarmonicPhasors {
    /// All orders zero.
    pub const ZERO: Self = Self {
        re: [0.0; MAX_HARMONIC + 1],
        im: [0.0; MAX_HARMONIC + 1],
    };

    /// The angle of order `h` in degrees, in (−180, 180]; 0 for a zero phasor or an order
    /// above 50.
    pub fn angle_deg(&self, h: usize) -> f64 {
        if h > MAX_HARMONIC || (self.re[h] == 0.0 && self.im[h] == 0.0) {
            return 0.0;
        }
        let a = libm::atan2(self.im[h], self.re[h]).to_degrees();
        if a <= -180.0 { a + 360.0 } else { a }
    }

    /// The RMS magnitude of order `h`'s centre bin; 0 for an order above 50.
    pub fn rms(&self, h: usize) -> f64 {
        if h > MAX_HARMONIC {
            return 0.0;
        }
        libm::hypot(self.re[h], self.im[h])
    }
}

impl Default for HarmonicPhasors {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Which phase a [`PhaseReport`] is for. Single-phase meters report phase `a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PhaseLabel {
    /// Phase a (L1), or the only phase.
    #[default]
    A,
    /// Phase b (L2).
    B,
    /// Phase c (L3).
    C,
}

/// One phase's quantities over a window, per IEEE 1459-2010 §3.1.2 (single-phase,
/// nonsinusoidal) with the sign conventions of DESIGN §3.2. All RMS values are of the signal
/// with the window's DC component removed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PhaseReport {
    /// Which phase.
    pub phase: PhaseLabel,
    /// RMS voltage V (DC removed).
    pub v_rms: f64,
    /// RMS current I (DC removed).
    pub i_rms: f64,
    /// Active power P = mean(v·i) over the window (IEEE 1459 §3.1.2.3); > 0 import.
    pub p_w: f64,
    /// Fundamental reactive power Q1 = V1·I1·sin θ1 (IEEE 1459 §3.1.2.5); > 0 inductive.
    pub q_var: f64,
    /// Apparent power S = V·I (IEEE 1459 §3.1.2.7).
    pub s_va: f64,
    /// Power factor P / S (IEEE 1459 §3.1.2.11); 0 when S is 0.
    pub pf: f64,
    /// Displacement power factor cos θ1 = P1 / S1 (IEEE 1459 §3.1.2.10); 0 when S1 is 0.
    pub dpf: f64,
    /// θ1 = phase of V1 minus phase of I1 in degrees, (−180, 180], positive when the current
    /// lags (inductive).
    pub angle_deg: f64,
    /// Voltage THD in percent of the fundamental, over harmonic subgroups 2..=50
    /// (IEC 61000-4-7 THDS); 0 when harmonics are disabled.
    pub v_thd_pct: f64,
    /// Current THD in percent of the fundamental, as `v_thd_pct`.
    pub i_thd_pct: f64,
    /// Fundamental active power P1 = V1·I1·cos θ1 (IEEE 1459 §3.1.2.3).
    pub p1_w: f64,
    /// Fundamental apparent power S1 = V1·I1 (IEEE 1459 §3.1.2.8).
    pub s1_va: f64,
    /// Nonfundamental apparent power S_N = √(S² − S1²) (IEEE 1459 §3.1.2.9).
    pub sn_va: f64,
    /// RMS of the fundamental voltage V1.
    pub v1_rms: f64,
    /// RMS of the fundamental current I1.
    pub i1_rms: f64,
    /// Phase of V1 in degrees relative to the window start (cosine reference).
    pub v1_phase_deg: f64,
    /// Phase of I1 in degrees relative to the window start (cosine reference).
    pub i1_phase_deg: f64,
    /// DC component of the voltage (window mean).
    pub v_dc: f64,
    /// DC component of the current (window mean).
    pub i_dc: f64,
    /// Voltage harmonic subgroups, index = order.
    pub v_harmonics: Harmonics,
    /// Current harmonic subgroups, index = order.
    pub i_harmonics: Harmonics,
    /// Voltage harmonic phasors (centre bins), index = order; serialized as
    /// `v_harmonic_angles_deg`, the angles in degrees.
    #[cfg_attr(feature = "serde", serde(rename = "v_harmonic_angles_deg"))]
    pub v_harmonic_phasors: HarmonicPhasors,
    /// Current harmonic phasors (centre bins), as `v_harmonic_phasors`; serialized as
    /// `i_harmonic_angles_deg`.
    #[cfg_attr(feature = "serde", serde(rename = "i_harmonic_angles_deg"))]
    pub i_harmonic_phasors: HarmonicPhasors,
}

/// The phases of a window: one (single-phase) or three (a, b, c). Dereferences to a slice.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Phases {
    items: [PhaseReport; 3],
    len: u8,
}

impl Phases {
    /// Up to three phase reports (more are ignored), e.g. for reports built by a simulator.
    pub fn from_slice(phases: &[PhaseReport]) -> Self {
        let mut items = [PhaseReport::default(); 3];
        let len = phases.len().min(3);
        items[..len].copy_from_slice(&phases[..len]);
        Self::new(items, len)
    }

    /// All three slots, including those past `len`.
    #[cfg(feature = "alloc")]
    pub(crate) fn items_mut(&mut self) -> &mut [PhaseReport; 3] {
        &mut self.items
    }

    pub(crate) fn new(items: [PhaseReport; 3], len: usize) -> Self {
        Self {
            items,
            len: len.min(3) as u8,
        }
    }
}

impl Deref for Phases {
    type Target = [PhaseReport];
    fn deref(&self) -> &[PhaseReport] {
        &self.items[..usize::from(self.len)]
    }
}

/// Totals over all phases. For a single phase they equal the phase's values. For three-phase
/// four-wire systems S is the effective apparent power of IEEE 1459-2010 §3.2.2.6,
/// S_e = 3·V_e·I_e, and PF = P / S_e (§3.2.2.10).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TotalReport {
    /// Total active power, the sum of the phases' P.
    pub p_w: f64,
    /// Total fundamental reactive power, the sum of the phases' Q1 (what four-quadrant
    /// reactive energy registers integrate).
    pub q_var: f64,
    /// Apparent power: V·I (single phase) or effective S_e = 3·V_e·I_e (three phase).
    pub s_va: f64,
    /// Power factor P / S; 0 when S is 0.
    pub pf: f64,
    /// Effective voltage V_e (IEEE 1459 §3.2.2.5, four-wire); V for a single phase.
    pub v_e_rms: f64,
    /// Effective current I_e (IEEE 1459 §3.2.2.4, four-wire); I for a single phase.
    pub i_e_rms: f64,
}

/// Conditions that make a window's values doubtful or special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WindowFlags {
    /// A raw sample reached a clip limit (ADC saturation) inside the window.
    pub clipped: bool,
    /// No usable AC voltage (absent, below `min_voltage_v`, or DC only): no cycles could be
    /// tracked, so the window has the nominal length and `freq_hz` is the nominal frequency.
    pub no_voltage: bool,
    /// The measured frequency is outside `frequency_range_hz`.
    pub frequency_out_of_range: bool,
    /// Fewer than 20 samples per cycle: harmonics beyond fs/(2f) cannot be seen and the
    /// fundamental is less accurate.
    pub too_few_samples_per_cycle: bool,
    /// Fewer cycles than a standard window: the trailing data of a recording (see
    /// [`Analyzer::finish`](crate::Analyzer::finish)) or the cycles before the voltage was lost.
    pub short: bool,
}

impl WindowFlags {
    /// Whether any flag is set.
    pub const fn any(&self) -> bool {
        self.clipped
            || self.no_voltage
            || self.frequency_out_of_range
            || self.too_few_samples_per_cycle
            || self.short
    }
}

/// The result of one measurement window (IEC 61000-4-30 §5.2: 10 cycles at 50 Hz, 12 at
/// 60 Hz, aligned to the signal's own cycles; consecutive windows partition time).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WindowReport {
    /// Start of the window in seconds since the first sample (sample n is at n / fs).
    pub t0_s: f64,
    /// Length of the window in seconds (fractional samples included).
    pub duration_s: f64,
    /// Whole cycles in the window (0 when no cycles were tracked).
    pub cycles: u32,
    /// Frequency over the window: cycles / duration (nominal when `no_voltage`).
    pub freq_hz: f64,
    /// The 10-second frequency of IEC 61000-4-30 §5.1 (whole cycles within the 10-s interval
    /// divided by their cumulative duration), on the window in which a 10-s interval closed.
    pub freq_10s_hz: Option<f64>,
    /// Per-phase quantities: one or three.
    pub phases: Phases,
    /// Totals over the phases.
    pub total: TotalReport,
    /// Neutral current RMS (three-phase only): measured, or computed from −(ia + ib + ic).
    pub i_n_rms: Option<f64>,
    /// Voltage unbalance |V2| / |V1| in percent from the fundamental phasors' negative and
    /// positive sequence components (IEC 61000-4-30 §5.7.1), three-phase only.
    pub v_unbalance_pct: Option<f64>,
    /// Current unbalance |I2| / |I1| in percent, as `v_unbalance_pct`.
    pub i_unbalance_pct: Option<f64>,
    /// Conditions affecting this window.
    pub flags: WindowFlags,
}

#[cfg(feature = "serde")]
mod serialize {
    use super::{HarmonicPhasors, Harmonics, Phases};
    use serde::ser::{Serialize, SerializeSeq, Serializer};

    impl Serialize for Harmonics {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for value in &self.0 {
                seq.serialize_element(value)?;
            }
            seq.end()
        }
    }

    /// As the angles in degrees, index = order (what a reader of JSON wants; the magnitudes
    /// are in the subgroups beside them).
    impl Serialize for HarmonicPhasors {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.re.len()))?;
            for h in 0..self.re.len() {
                seq.serialize_element(&self.angle_deg(h))?;
            }
            seq.end()
        }
    }

    impl Serialize for Phases {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.len()))?;
            for phase in self.iter() {
                seq.serialize_element(phase)?;
            }
            seq.end()
        }
    }
}
