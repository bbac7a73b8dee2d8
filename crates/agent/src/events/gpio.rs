//! Tamper inputs on GPIO lines (Linux GPIO character device): cover switch, magnetic sensor,
//! manual reconnection button.
//!
//! [`GpioConfig`] names the lines; [`GpioMap`] turns line edges into [`Signal`]s (pure logic,
//! tested without hardware); with the `gpio` feature, [`GpioInputs`] requests the lines through
//! `gpiocdev` with edge detection on both edges and the kernel's own debounce, reads their
//! initial levels, and forwards every change over a channel from a dedicated thread.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind};
use crate::sources::{Signal, SignalKind};

/// `[events.gpio]`: the GPIO lines wired to tamper sensors.
///
/// ```toml
/// [events.gpio]
/// chip = "/dev/gpiochip0"
/// inputs = [
///   { line = 17, signal = "cover_open", active_low = true },
///   { line = 27, signal = "magnetic_field" },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// The GPIO chip device.
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// Kernel debounce period in microseconds (where the chip supports it), on top of the
    /// detector's own debounce.
    #[serde(default = "default_debounce_us")]
    pub debounce_us: u32,
    /// The lines.
    pub inputs: Vec<GpioInputConfig>,
}

fn default_chip() -> PathBuf {
    PathBuf::from("/dev/gpiochip0")
}
const fn default_debounce_us() -> u32 {
    5_000
}

/// One GPIO input line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioInputConfig {
    /// Line offset on the chip.
    pub line: u32,
    /// What the line reports.
    pub signal: SignalKind,
    /// The sensor pulls the line low when active (a switch to ground with a pull-up).
    #[serde(default)]
    pub active_low: bool,
}

/// The mapping from line offsets and physical levels to [`Signal`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct GpioMap {
    inputs: Vec<GpioInputConfig>,
}

impl GpioMap {
    /// Check the config: lines unique, each signal on one line.
    pub fn new(config: &GpioConfig) -> Result<GpioMap, Error> {
        for (n, a) in config.inputs.iter().enumerate() {
            for b in &config.inputs[..n] {
                if a.line == b.line || a.signal == b.signal {
                    return Err(Error {
                        kind: ErrorKind::Config(format!(
                            "events.gpio.inputs[{n}]: line {} / {:?} is already used by another input",
                            a.line, a.signal
                        )),
                    });
                }
            }
        }
        Ok(GpioMap {
            inputs: config.inputs.clone(),
        })
    }

    /// The line offsets to request.
    pub fn lines(&self) -> Vec<u32> {
        self.inputs.iter().map(|i| i.line).collect()
    }

    /// The signal for `line` at physical level `high` (true = electrically high), at `t_s`;
    /// `None` for a line that is not mapped.
    pub fn signal(&self, line: u32, high: bool, t_s: f64) -> Option<Signal> {
        let input = self.inputs.iter().find(|i| i.line == line)?;
        Some(Signal {
            t_s,
            kind: input.signal,
            active: high != input.active_low,
        })
    }
}

#[cfg(feature = "gpio")]
pub use hardware::GpioInputs;

#[cfg(feature = "gpio")]
mod hardware {
    use std::time::{Duration, Instant};

    use gpiocdev::line::{EdgeDetection, EdgeKind, Value};
    use tokio::sync::mpsc;

    use super::*;

    /// Requested GPIO lines, forwarding level changes as [`Signal`]s.
    #[derive(Debug)]
    pub struct GpioInputs {
        rx: mpsc::Receiver<Signal>,
    }

    impl GpioInputs {
        /// Request the lines of `config` and start watching them. The current level of every
        /// line is sent first, so a cover already open at start-up is reported.
        pub fn open(config: &GpioConfig) -> Result<GpioInputs, Error> {
            let map = GpioMap::new(config)?;
            let io = |e: gpiocdev::Error| {
                Error::io(
                    format!(
                        "cannot request gpio lines {:?} on {}",
                        map.lines(),
                        config.chip.display()
                    ),
                    std::io::Error::other(e.to_string()),
                )
            };
            let request = gpiocdev::Request::builder()
                .on_chip(&config.chip)
                .with_consumer("wattline-agent")
                .with_lines(&map.lines())
                .as_input()
                .with_edge_detection(EdgeDetection::BothEdges)
                .with_debounce_period(Duration::from_micros(u64::from(config.debounce_us)))
                .request()
                .map_err(io)?;
            let (tx, rx) = mpsc::channel(64);
            let start = Instant::now();
            for line in map.lines() {
                let value = request.value(line).map_err(io)?;
                if let Some(s) = map.signal(line, value == Value::Active, 0.0) {
                    let _ = tx.try_send(s);
                }
            }
            std::thread::Builder::new()
                .name("gpio-tamper".into())
                .spawn(move || {
                    while let Ok(event) = request.read_edge_event() {
                        let high = event.kind == EdgeKind::Rising;
                        let t_s = start.elapsed().as_secs_f64();
                        if let Some(s) = map.signal(event.offset, high, t_s)
                            && tx.blocking_send(s).is_err()
                        {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::io("cannot start the gpio thread", e))?;
            Ok(GpioInputs { rx })
        }

        /// The next level change; `None` if the watcher stopped.
        pub async fn next(&mut self) -> Option<Signal> {
            self.rx.recv().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_signals_with_active_low_lines_inverted() {
        let config: GpioConfig = toml::from_str(
            r#"
            inputs = [
              { line = 17, signal = "cover_open", active_low = true },
              { line = 27, signal = "magnetic_field" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(config.chip, PathBuf::from("/dev/gpiochip0"));
        let map = GpioMap::new(&config).unwrap();
        assert_eq!(map.lines(), [17, 27]);
        let s = map.signal(17, false, 1.0).unwrap();
        assert_eq!((s.kind, s.active), (SignalKind::CoverOpen, true));
        assert!(!map.signal(17, true, 1.0).unwrap().active);
        assert!(map.signal(27, true, 1.0).unwrap().active);
        assert_eq!(map.signal(5, true, 1.0), None);
    }

    #[test]
    fn duplicate_lines_or_signals_are_rejected() {
        let config: GpioConfig = toml::from_str(
            "inputs = [{ line = 1, signal = \"cover_open\" }, { line = 1, signal = \"magnetic_field\" }]",
        )
        .unwrap();
        let err = GpioMap::new(&config).unwrap_err().to_string();
        assert!(err.contains("events.gpio.inputs[1]"), "{err}");
        assert!(toml::from_str::<GpioConfig>("inputs = []\npin = 3").is_err());
    }
}
