//! Configuration of the `replay` source.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::super::simulator::Pace;

/// `[source] type = "replay"`: play a recorded waveform (DESIGN §3.2 CSV or WAV).
///
/// ```toml
/// [source]
/// type = "replay"
/// path = "recordings/house-3ph.csv"
/// rate_hz = 8000        # needed when the CSV has no `t` column
/// looped = true
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// The recording: `.csv` or `.wav` (chosen by extension).
    pub path: PathBuf,
    /// Sample rate in hertz, required for a CSV without a `t` column (a CSV with `t` derives it
    /// from the first two rows; a WAV carries its own).
    #[serde(default)]
    pub rate_hz: Option<f64>,
    /// Scale applied to voltage samples (volts per unit in the file), as `--v-scale`.
    #[serde(default = "default_scale")]
    pub v_scale: f64,
    /// Scale applied to current samples (amperes per unit in the file), as `--i-scale`.
    #[serde(default = "default_scale")]
    pub i_scale: f64,
    /// Start again from the beginning at the end (each restart is flagged as a discontinuity).
    #[serde(default)]
    pub looped: bool,
    /// Real time or as fast as possible.
    #[serde(default)]
    pub pace: Pace,
    /// Frames per chunk handed to the pipeline.
    #[serde(default = "default_chunk_frames")]
    pub chunk_frames: usize,
}

const fn default_scale() -> f64 {
    1.0
}
const fn default_chunk_frames() -> usize {
    1600
}
