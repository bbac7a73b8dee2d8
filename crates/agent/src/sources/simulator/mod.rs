//! The `simulator` source: modelled loads synthesised as real voltage and current waveforms.

mod config;

pub use config::{
    Bypass, Load, LoadKind, MeterPosition, Noise, Pace, PhaseSel, Scenario, SimulatorConfig,
    Supply, Tamper, TamperKind,
};
