//! `metrology`: the measuring core of a wattline meter — `no_std`, no clock, no I/O.
//!
//! Feed it voltage and current samples; it cuts them into gapless measurement windows aligned to
//! the signal's own cycles (IEC 61000-4-30: 10 cycles at 50 Hz, 12 at 60 Hz) and reports per
//! window, per phase, the quantities of IEEE 1459-2010: RMS voltage and current, active power
//! P = mean(v·i), fundamental reactive power Q1, apparent power S = V·I, PF, DPF, the signed
//! fundamental angle, S1, S_N, THD and the harmonic subgroups up to the 50th (IEC 61000-4-7).
//! Three-phase four-wire meters also get the effective apparent power S_e, the neutral current
//! and voltage/current unbalance. Every window's energy goes into four-quadrant registers that do
//! not drift.
//!
//! The main types:
//! - [`AnalyzerConfig`]: sample rate, [`NominalFrequency`], [`Layout`], [`Calibration`], limits;
//! - [`Analyzer`] (feature `alloc`, on by default): the streaming analysis. It allocates once, in
//!   [`Analyzer::new`]; pushing samples never allocates and hands each finished [`WindowReport`]
//!   to a closure;
//! - [`WindowReport`] with one or three [`PhaseReport`]s, a [`TotalReport`] and [`WindowFlags`];
//! - [`EnergyRegisters`]: import/export Wh and Q1–Q4 varh;
//! - [`derive_phase_calibration`]: gains, offsets and V/I skew from reference-load readings.
//!
//! ```
//! use metrology::{Analyzer, AnalyzerConfig, NominalFrequency};
//!
//! // 230 V, 4.6957 A lagging by 36.87° (PF 0.8): 864 W, 648 var, 1080 VA.
//! let fs = 8000.0;
//! let mut analyzer = Analyzer::new(AnalyzerConfig::single_phase(fs, NominalFrequency::Hz50))?;
//! let w = 2.0 * core::f64::consts::PI * 50.0;
//! let theta = 0.8f64.acos();
//! let v: Vec<f64> = (0..8000).map(|n| 230.0 * 2f64.sqrt() * (w * n as f64 / fs).sin()).collect();
//! let i: Vec<f64> = (0..8000)
//!     .map(|n| 4.6957 * 2f64.sqrt() * (w * n as f64 / fs - theta).sin())
//!     .collect();
//! let mut windows = Vec::new();
//! analyzer.push_single_phase(&v, &i, |report| windows.push(*report))?;
//! analyzer.finish(|report| windows.push(*report))?;
//! let first = &windows[0];
//! assert_eq!(first.cycles, 10);
//! assert!((first.phases[0].p_w - 864.0).abs() < 0.1);
//! assert!((first.phases[0].q_var - 648.0).abs() < 0.1);
//! assert!((first.phases[0].pf - 0.8).abs() < 1e-4);
//! assert!(analyzer.energy().import_wh() > 0.0);
//! # Ok::<(), metrology::Error>(())
//! ```
//!
//! # Numbers: f64 on the host, and what an f32 / no-FPU port costs
//! All arithmetic is `f64`. On the host it is as fast as `f32` for this work (the hot loops are
//! memory-bound), and it keeps the window sums exact enough that the algorithm's own error stays
//! near 1e-7 of S. Microcontrollers without a double-precision FPU (Cortex-M4F has single
//! precision only; ESP32 has no FPU for doubles) run `f64` in software, roughly 10–50× slower.
//! A port to `f32` must not accumulate window sums in `f32`: with 24-bit mantissas, Σv² over
//! 1600 samples loses ~1e-5 relative, and the fundamental correlation loses more at large
//! sample counts. The usual design is integer ADC samples accumulated in `i64` (exact), `f32`
//! for the FFT (harmonics need ~1e-4), and `f64`-emulated arithmetic only for the once-per-window
//! divisions and square roots. The energy registers are already integer-based.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
mod analyzer;
mod calibration;
mod config;
mod energy;
mod error;
#[cfg(feature = "alloc")]
mod fft;
mod report;
mod sums;
#[cfg(feature = "alloc")]
mod tracker;
#[cfg(feature = "alloc")]
mod window;

#[cfg(feature = "alloc")]
pub use analyzer::Analyzer;
pub use calibration::{
    Calibration, CalibrationPoint, ChannelCalibration, MAX_SKEW_SAMPLES, PhaseCalibration,
    ReferencePoint, derive_phase_calibration,
};
pub use config::{AnalyzerConfig, ClipLimits, Layout, NominalFrequency};
pub use energy::EnergyRegisters;
pub use error::{Error, ErrorKind};
pub use report::{
    Harmonics, MAX_HARMONIC, PhaseLabel, PhaseReport, Phases, TotalReport, WindowFlags,
    WindowReport,
};
pub use sums::{PowerSums, power_sums};
