//! Calibration: per-channel gain and offset, per-phase V/I time skew, and the routine that
//! derives them from readings of a reference load at PF 1 and PF 0.5.

use crate::error::{Error, ErrorKind};

/// Gain and offset of one channel: `corrected = gain * (raw - offset)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ChannelCalibration {
    /// Scale from raw units to volts or amperes.
    pub gain: f64,
    /// Raw value that corresponds to zero (ADC mid-scale, sensor offset).
    pub offset: f64,
}

impl ChannelCalibration {
    /// Gain 1, offset 0.
    pub const UNITY: Self = Self {
        gain: 1.0,
        offset: 0.0,
    };

    fn validate(&self, field: &'static str) -> Result<(), Error> {
        if !(self.gain.is_finite() && self.gain > 0.0 && self.offset.is_finite()) {
            return Err(Error::config(
                field,
                "a finite positive gain and a finite offset",
            ));
        }
        Ok(())
    }
}

/// Calibration of one phase's voltage and current channels.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PhaseCalibration {
    /// Voltage channel gain and offset.
    pub voltage: ChannelCalibration,
    /// Current channel gain and offset.
    pub current: ChannelCalibration,
    /// How many samples the current channel lags the voltage channel because of the sensors
    /// (CT phase error, sequential ADC conversion). Positive values are compensated by delaying
    /// the voltage, negative ones by delaying the current, by a fractional-sample delay
    /// (4-point Lagrange interpolation). At most ±8 samples.
    pub skew_samples: f64,
}

impl PhaseCalibration {
    /// No correction.
    pub const UNITY: Self = Self {
        voltage: ChannelCalibration::UNITY,
        current: ChannelCalibration::UNITY,
        skew_samples: 0.0,
    };
}

/// Calibration of every channel of a meter. Single-phase meters use `phases[0]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Calibration {
    /// Phases a, b, c.
    pub phases: [PhaseCalibration; 3],
    /// The measured neutral current channel, if any.
    pub neutral: ChannelCalibration,
}

/// The largest skew the fractional delay line compensates, in samples.
pub const MAX_SKEW_SAMPLES: f64 = 8.0;

impl Calibration {
    /// No correction on any channel.
    pub const fn unity() -> Self {
        Self {
            phases: [PhaseCalibration::UNITY; 3],
            neutral: ChannelCalibration::UNITY,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        for phase in &self.phases {
            phase.voltage.validate("calibration.voltage")?;
            phase.current.validate("calibration.current")?;
            if !(phase.skew_samples.is_finite() && phase.skew_samples.abs() <= MAX_SKEW_SAMPLES) {
                return Err(Error::config(
                    "calibration.skew_samples",
                    "finite and within ±8 samples",
                ));
            }
        }
        self.neutral.validate("calibration.neutral")
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::unity()
    }
}

/// The true values of a reference load (from a calibrator or reference meter).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReferencePoint {
    /// True RMS voltage.
    pub v_rms: f64,
    /// True RMS current.
    pub i_rms: f64,
    /// True fundamental angle (V minus I, positive lagging): 0 at PF 1, 60 at PF 0.5 lagging.
    pub angle_deg: f64,
}

/// One calibration reading: the reference truth beside what this meter measured for it, with
/// the calibration that was in force while measuring.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CalibrationPoint {
    /// What the reference says.
    pub reference: ReferencePoint,
    /// Measured RMS voltage (DC removed), from [`PhaseReport::v_rms`](crate::PhaseReport).
    pub v_rms: f64,
    /// Measured RMS current (DC removed).
    pub i_rms: f64,
    /// Measured voltage DC component (the window mean).
    pub v_dc: f64,
    /// Measured current DC component.
    pub i_dc: f64,
    /// Measured fundamental angle in degrees.
    pub angle_deg: f64,
    /// Measured frequency in hertz.
    pub freq_hz: f64,
}

impl CalibrationPoint {
    /// Takes the measured values from one phase of a window report.
    pub fn from_report(
        reference: ReferencePoint,
        report: &crate::WindowReport,
        phase: usize,
    ) -> Result<Self, Error> {
        let Some(p) = report.phases.get(phase) else {
            return Err(Error::new(ErrorKind::InvalidCalibrationReading {
                reason: "the report has no such phase",
            }));
        };
        Ok(Self {
            reference,
            v_rms: p.v_rms,
            i_rms: p.i_rms,
            v_dc: p.v_dc,
            i_dc: p.i_dc,
            angle_deg: p.angle_deg,
            freq_hz: report.freq_hz,
        })
    }

    fn check(&self) -> Result<(), Error> {
        let values = [
            self.reference.v_rms,
            self.reference.i_rms,
            self.reference.angle_deg,
            self.v_rms,
            self.i_rms,
            self.v_dc,
            self.i_dc,
            self.angle_deg,
            self.freq_hz,
        ];
        if values.iter().any(|x| !x.is_finite()) {
            return Err(reading("a value is not finite"));
        }
        if self.reference.v_rms <= 0.0 || self.reference.i_rms <= 0.0 {
            return Err(reading(
                "the reference voltage and current must be positive",
            ));
        }
        if self.v_rms <= 0.0 || self.i_rms <= 0.0 {
            return Err(reading("the measured voltage or current is zero"));
        }
        if self.freq_hz <= 0.0 {
            return Err(reading("the measured frequency is not positive"));
        }
        Ok(())
    }
}

fn reading(reason: &'static str) -> Error {
    Error::new(ErrorKind::InvalidCalibrationReading { reason })
}

/// Derives a phase's calibration from two readings of a reference load, taken with the
/// calibration `present` in force: `unity` at PF 1 fixes the gains and offsets, `lagging` at
/// PF 0.5 fixes the V/I skew. PF 0.5 is used for the skew because there an angle error moves
/// the active power most (dP/dθ = −S·sin θ), as in meter calibration practice (IEC 62053-22
/// tests accuracy at PF 1 and 0.5 inductive).
///
/// Offsets: the reference signals have no DC, so a measured window mean `d` is the offset left
/// over, `d / gain` raw units. Gains: `reference / measured` RMS. Skew: an angle error of `e`
/// degrees at frequency `f` is a delay of `e / (360 f)` seconds, `e · fs / (360 f)` samples.
pub fn derive_phase_calibration(
    present: &PhaseCalibration,
    unity: &CalibrationPoint,
    lagging: &CalibrationPoint,
    sample_rate_hz: f64,
) -> Result<PhaseCalibration, Error> {
    unity.check()?;
    lagging.check()?;
    if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
        return Err(reading("the sample rate must be positive"));
    }
    if unity.reference.angle_deg.abs() > 10.0 {
        return Err(reading("the PF 1 reading's reference angle is not near 0°"));
    }
    if !(30.0..=80.0).contains(&lagging.reference.angle_deg.abs()) {
        return Err(reading(
            "the PF 0.5 reading's reference angle is not between 30° and 80°",
        ));
    }
    let voltage = ChannelCalibration {
        gain: present.voltage.gain * unity.reference.v_rms / unity.v_rms,
        offset: present.voltage.offset + unity.v_dc / present.voltage.gain,
    };
    let current = ChannelCalibration {
        gain: present.current.gain * unity.reference.i_rms / unity.i_rms,
        offset: present.current.offset + unity.i_dc / present.current.gain,
    };
    let mut error_deg = lagging.angle_deg - lagging.reference.angle_deg;
    // Keep the error in (−180°, 180°] so a wrap of the measured angle is not read as a
    // half-period skew.
    error_deg -= 360.0 * libm::round(error_deg / 360.0);
    let skew_samples =
        present.skew_samples + error_deg * sample_rate_hz / (360.0 * lagging.freq_hz);
    let result = PhaseCalibration {
        voltage,
        current,
        skew_samples,
    };
    if skew_samples.abs() > MAX_SKEW_SAMPLES {
        return Err(reading(
            "the derived skew exceeds ±8 samples; check the wiring and the reference angle",
        ));
    }
    voltage
        .validate("voltage")
        .map_err(|_| reading("derived voltage gain is not positive"))?;
    current
        .validate("current")
        .map_err(|_| reading("derived current gain is not positive"))?;
    Ok(result)
}
