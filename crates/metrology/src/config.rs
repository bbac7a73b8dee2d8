//! Analyzer configuration: sample rate, nominal frequency, wiring layout, calibration, limits.

use crate::calibration::Calibration;
use crate::error::Error;

/// Nominal system frequency. It fixes the window length of IEC 61000-4-30 (10 cycles at 50 Hz,
/// 12 at 60 Hz, both about 200 ms) and the centre of the cycle tracker's pass band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum NominalFrequency {
    /// 50 Hz systems: 10-cycle windows.
    Hz50,
    /// 60 Hz systems: 12-cycle windows.
    Hz60,
}

impl NominalFrequency {
    /// The nominal frequency in hertz.
    pub const fn hz(self) -> f64 {
        match self {
            Self::Hz50 => 50.0,
            Self::Hz60 => 60.0,
        }
    }

    /// Cycles per measurement window (IEC 61000-4-30 §5.2: 10 at 50 Hz, 12 at 60 Hz).
    pub const fn cycles_per_window(self) -> u32 {
        match self {
            Self::Hz50 => 10,
            Self::Hz60 => 12,
        }
    }
}

/// How the meter is wired, which fixes the channels of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Layout {
    /// One voltage and one current: frames `[v, i]`.
    SinglePhase,
    /// Three phases and neutral: frames `[va, vb, vc, ia, ib, ic]`, plus `in` when the neutral
    /// current is measured. Without it the neutral current is computed as `-(ia + ib + ic)`.
    ThreePhaseFourWire {
        /// Whether frames carry a seventh channel with the measured neutral current.
        neutral_measured: bool,
    },
}

impl Layout {
    /// Values per frame: 2, 6 or 7.
    pub const fn channels(self) -> usize {
        match self {
            Self::SinglePhase => 2,
            Self::ThreePhaseFourWire {
                neutral_measured: false,
            } => 6,
            Self::ThreePhaseFourWire {
                neutral_measured: true,
            } => 7,
        }
    }

    /// Number of phases: 1 or 3.
    pub const fn phases(self) -> usize {
        match self {
            Self::SinglePhase => 1,
            Self::ThreePhaseFourWire { .. } => 3,
        }
    }

    /// Channel names in frame order, as used in error messages and file headers.
    pub const fn channel_names(self) -> &'static [&'static str] {
        match self {
            Self::SinglePhase => &["v", "i"],
            Self::ThreePhaseFourWire {
                neutral_measured: false,
            } => &["va", "vb", "vc", "ia", "ib", "ic"],
            Self::ThreePhaseFourWire {
                neutral_measured: true,
            } => &["va", "vb", "vc", "ia", "ib", "ic", "in"],
        }
    }
}

/// ADC saturation limits on the *raw* input values (before calibration). A window holding a
/// sample whose magnitude reaches its limit is flagged `clipped`. Infinite limits disable the
/// check (the default, for recordings that come already in volts and amperes).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClipLimits {
    /// A raw voltage sample with `|v| >= v_abs` counts as clipped.
    pub v_abs: f64,
    /// A raw current sample with `|i| >= i_abs` counts as clipped.
    pub i_abs: f64,
}

impl Default for ClipLimits {
    fn default() -> Self {
        Self {
            v_abs: f64::INFINITY,
            i_abs: f64::INFINITY,
        }
    }
}

/// Everything the [`Analyzer`](crate::Analyzer) needs to know about the signal.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AnalyzerConfig {
    /// Sample (frame) rate in hertz; 1 kHz to 1 MHz.
    pub sample_rate_hz: f64,
    /// Nominal system frequency.
    pub nominal: NominalFrequency,
    /// Wiring and frame layout.
    pub layout: Layout,
    /// Per-channel gain/offset and per-phase V/I time skew, applied to every sample.
    pub calibration: Calibration,
    /// Compute the harmonic spectra (`v_harmonics`, `i_harmonics`, THD). Without them the window
    /// analysis skips its FFT; the fundamental quantities (Q1, DPF, angle, S1) are still exact.
    pub harmonics: bool,
    /// ADC saturation limits for the `clipped` flag.
    pub clip: ClipLimits,
    /// Below this fundamental-tracking amplitude (volts RMS) the voltage counts as absent: no
    /// cycles are tracked and windows are flagged `no_voltage`.
    pub min_voltage_v: f64,
    /// Frequencies outside `[min, max]` (hertz) flag a window `frequency_out_of_range`. The
    /// default is nominal ± 15 %, the range the tracker follows.
    pub frequency_range_hz: (f64, f64),
}

impl AnalyzerConfig {
    /// A single-phase configuration with unit calibration, harmonics on and default limits.
    pub fn single_phase(sample_rate_hz: f64, nominal: NominalFrequency) -> Self {
        Self::with_layout(sample_rate_hz, nominal, Layout::SinglePhase)
    }

    /// A three-phase four-wire configuration with unit calibration, harmonics on and default
    /// limits.
    pub fn three_phase(
        sample_rate_hz: f64,
        nominal: NominalFrequency,
        neutral_measured: bool,
    ) -> Self {
        Self::with_layout(
            sample_rate_hz,
            nominal,
            Layout::ThreePhaseFourWire { neutral_measured },
        )
    }

    fn with_layout(sample_rate_hz: f64, nominal: NominalFrequency, layout: Layout) -> Self {
        let f = nominal.hz();
        Self {
            sample_rate_hz,
            nominal,
            layout,
            calibration: Calibration::unity(),
            harmonics: true,
            clip: ClipLimits::default(),
            min_voltage_v: 5.0,
            frequency_range_hz: (f * 0.85, f * 1.15),
        }
    }

    /// Checks every field; the [`Analyzer`](crate::Analyzer) calls this in `new`.
    pub fn validate(&self) -> Result<(), Error> {
        let fs = self.sample_rate_hz;
        if !(fs.is_finite() && (1_000.0..=1_000_000.0).contains(&fs)) {
            return Err(Error::config(
                "sample_rate_hz",
                "a finite rate between 1000 and 1000000 Hz",
            ));
        }
        if !(self.min_voltage_v.is_finite() && self.min_voltage_v >= 0.0) {
            return Err(Error::config("min_voltage_v", "finite and not negative"));
        }
        let (lo, hi) = self.frequency_range_hz;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi) {
            return Err(Error::config(
                "frequency_range_hz",
                "finite, positive and increasing",
            ));
        }
        if self.clip.v_abs.is_nan()
            || self.clip.i_abs.is_nan()
            || self.clip.v_abs <= 0.0
            || self.clip.i_abs <= 0.0
        {
            return Err(Error::config("clip", "positive limits (infinity disables)"));
        }
        self.calibration.validate()
    }
}
