//! The `replay` source: recorded waveforms (DESIGN §3.2 CSV/WAV), once or looped.

mod config;

pub use config::ReplayConfig;
