//! The `spi_adc` source: MCP3008/MCP3208 converters on Linux spidev.

mod config;

pub use config::{ChannelMap, Chip, SignalName, SpiAdcConfig};
