//! The `simulator` source: modelled loads synthesised as real voltage and current waveforms.
//!
//! A [`Scenario`] (TOML file) describes the supply, the loads with their schedules, tamper
//! actions and noise; [`Simulator`] turns it into sample chunks deterministically (same seed,
//! same samples), and [`SimulatorSource`] paces them in real time or as fast as possible. The
//! samples go through the real metrology engine like an ADC's would: nothing here computes
//! powers or energies.
//!
//! Theft by bypass (seed 003) is modelled by the meter's [`MeterPosition`]: the `observer` meter
//! upstream sees every load, the `house` meter does not see loads marked `bypass`. Tampering
//! (magnet, reversed CT, cover) only affects the house meter; a magnet or cover opening also
//! produces the sensor [`Signal`](crate::sources::Signal)s a real meter's switches would.

mod config;
mod engine;
mod rng;

pub use config::{
    Bypass, Load, LoadKind, MeterPosition, Noise, Pace, PhaseSel, Scenario, SimulatorConfig,
    Supply, Tamper, TamperKind,
};
pub use engine::{MAX_ORDER, Simulator};

use std::collections::VecDeque;
use std::path::Path;

use tokio::time::Instant;

use super::{Error, NextOutput, Source, SourceOutput};

/// Scenarios bundled with the agent, by name: the seed cases the demo fleet is made of.
pub const BUNDLED: [(&str, &str); 7] = [
    ("resistive", include_str!("scenarios/resistive.toml")),
    ("pump", include_str!("scenarios/pump.toml")),
    ("pv_house", include_str!("scenarios/pv_house.toml")),
    ("harmonic", include_str!("scenarios/harmonic.toml")),
    ("bypass_theft", include_str!("scenarios/bypass_theft.toml")),
    ("tampered", include_str!("scenarios/tampered.toml")),
    ("slow_theft", include_str!("scenarios/slow_theft.toml")),
];

impl Scenario {
    /// A bundled scenario by name (see [`BUNDLED`]).
    pub fn bundled(name: &str) -> Result<Scenario, Error> {
        let (_, text) = BUNDLED.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
            Error::scenario(format!("no bundled scenario {name:?}; there are {names:?}"))
        })?;
        Scenario::from_toml(text, &format!("bundled scenario {name}"))
    }

    /// Parse a scenario from TOML text; `origin` names it in errors (a file path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, Error> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| Error::scenario(format!("{origin}: {}", e.to_string().trim_end())))?;
        engine::validate(&scenario)
            .map_err(|e| Error::scenario(format!("{origin}: {}", strip_prefix(&e))))?;
        Ok(scenario)
    }

    /// Read and parse a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read scenario {}", path.display()), e))?;
        Scenario::from_toml(&text, &path.display().to_string())
    }
}

fn strip_prefix(e: &Error) -> String {
    match e.kind() {
        super::ErrorKind::Scenario(m) => m.clone(),
        _ => e.to_string(),
    }
}

/// The simulator as a paced [`Source`].
#[derive(Debug)]
pub struct SimulatorSource {
    sim: Simulator,
    pace: Pace,
    chunk_frames: usize,
    started: Option<Instant>,
    /// Outputs produced but not handed out yet, with the instant they are due (real time).
    pending: VecDeque<(Option<Instant>, SourceOutput)>,
}

impl SimulatorSource {
    /// Load the scenario named in `config` and prepare the source.
    pub fn from_config(config: &SimulatorConfig) -> Result<SimulatorSource, Error> {
        if config.chunk_ms == 0 || config.chunk_ms > 10_000 {
            return Err(Error::config(format!(
                "simulator.chunk_ms must be within 1..=10000, got {}",
                config.chunk_ms
            )));
        }
        let scenario = Scenario::load(&config.scenario)?;
        let sim = Simulator::new(scenario, config.position, config.seed)?;
        let chunk_frames =
            ((sim.sample_rate_hz() * f64::from(config.chunk_ms) / 1000.0).round() as usize).max(1);
        Ok(SimulatorSource::new(sim, config.pace, chunk_frames))
    }

    /// A source over an already built simulator.
    pub fn new(sim: Simulator, pace: Pace, chunk_frames: usize) -> SimulatorSource {
        SimulatorSource {
            sim,
            pace,
            chunk_frames: chunk_frames.max(1),
            started: None,
            pending: VecDeque::new(),
        }
    }

    /// The simulator.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// Produce the next chunk (and the signals inside it) into `pending`.
    fn produce(&mut self) {
        if self.sim.frames_left() == Some(0) {
            return;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let t0 = self.sim.time_s();
        let chunk = self.sim.generate(self.chunk_frames);
        let t1 = t0 + chunk.duration_s();
        let due = |t: f64| match self.pace {
            Pace::RealTime => Some(started + std::time::Duration::from_secs_f64(t)),
            Pace::AsFastAsPossible => None,
        };
        for s in self.sim.signals_between(t0, t1).collect::<Vec<_>>() {
            self.pending
                .push_back((due(s.t_s), SourceOutput::Signal(s)));
        }
        // A chunk is due when its last sample has been "measured", as from a real ADC.
        self.pending
            .push_back((due(t1), SourceOutput::Samples(chunk)));
    }
}

impl Source for SimulatorSource {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn set_load_connected(&mut self, connected: bool) {
        self.sim.set_load_connected(connected);
    }

    fn next(&mut self) -> NextOutput<'_> {
        Box::pin(async move {
            if self.pending.is_empty() {
                self.produce();
            }
            let Some((due, _)) = self.pending.front() else {
                return Ok(None);
            };
            if let Some(due) = *due {
                // Cancel-safe: the output stays queued while we sleep.
                tokio::time::sleep_until(due).await;
            }
            Ok(self.pending.pop_front().map(|(_, out)| out))
        })
    }
}

#[cfg(test)]
mod tests;
