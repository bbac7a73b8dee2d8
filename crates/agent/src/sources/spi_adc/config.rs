//! Configuration of the `spi_adc` source.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[source] type = "spi_adc"`: an MCP3008 (10-bit) or MCP3208 (12-bit) ADC on Linux spidev,
/// sampling voltage and current sensors (seed 004: a voltage transformer and a current clamp
/// biased to mid-rail).
///
/// ```toml
/// [source]
/// type = "spi_adc"
/// device = "/dev/spidev0.0"
/// chip = "mcp3208"
/// sample_rate_hz = 4000
/// channels = [
///   { adc_channel = 0, signal = "va", scale = 0.5, offset_counts = 2048 },
///   { adc_channel = 1, signal = "ia", scale = 0.0125, offset_counts = 2048 },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiAdcConfig {
    /// The spidev device.
    pub device: PathBuf,
    /// The converter.
    pub chip: Chip,
    /// SPI clock in hertz. The MCP3x08 runs up to 3.6 MHz at 5 V and 1.35 MHz at 2.7 V.
    #[serde(default = "default_spi_hz")]
    pub spi_hz: u32,
    /// Frames per second (each frame reads every mapped channel once).
    pub sample_rate_hz: f64,
    /// Which ADC input carries which signal, and how to convert counts to volts or amperes.
    pub channels: Vec<ChannelMap>,
    /// Frames per chunk handed to the pipeline.
    #[serde(default = "default_chunk_frames")]
    pub chunk_frames: usize,
}

const fn default_spi_hz() -> u32 {
    1_000_000
}
const fn default_chunk_frames() -> usize {
    800
}

/// The supported converters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chip {
    /// Microchip MCP3008: 8 channels, 10 bits.
    Mcp3008,
    /// Microchip MCP3208: 8 channels, 12 bits.
    Mcp3208,
}

impl Chip {
    /// Resolution in bits.
    pub const fn bits(self) -> u32 {
        match self {
            Chip::Mcp3008 => 10,
            Chip::Mcp3208 => 12,
        }
    }

    /// The mid-rail count, the default bias of an AC sensor.
    pub const fn mid_scale(self) -> u16 {
        1 << (self.bits() - 1)
    }
}

/// One mapped ADC input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMap {
    /// ADC input 0..=7 (single-ended).
    pub adc_channel: u8,
    /// The signal it carries: `v`/`i` for a single-phase meter, or `va`..`vc`, `ia`..`ic`, `in`.
    pub signal: SignalName,
    /// Volts or amperes per count after removing the offset.
    pub scale: f64,
    /// The count that means zero (the sensor's bias, normally mid-rail); defaults to the
    /// chip's mid-scale.
    #[serde(default)]
    pub offset_counts: Option<f64>,
}

/// Names of the measured signals, as in the DESIGN §3.2 column names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    /// Single-phase voltage.
    V,
    /// Single-phase current.
    I,
    /// Phase a voltage.
    Va,
    /// Phase b voltage.
    Vb,
    /// Phase c voltage.
    Vc,
    /// Phase a current.
    Ia,
    /// Phase b current.
    Ib,
    /// Phase c current.
    Ic,
    /// Neutral current.
    In,
}
