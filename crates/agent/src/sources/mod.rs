//! Sources: where the agent's measurements come from (simulator, replay, PZEM-004T, SPI ADC).
//!
//! A [`Source`] yields [`SourceOutput`]s one at a time:
//!
//! - [`SourceOutput::Samples`]: a [`SampleChunk`] of raw voltage/current frames at a known sample
//!   rate, which the pipeline feeds through `metrology::Analyzer` (simulator, replay, spi-adc);
//! - [`SourceOutput::Measured`]: a [`DeviceMeasurement`] a device computed itself (the PZEM-004T
//!   reports RMS values, power and its own energy counter; there is no waveform to analyse);
//! - [`SourceOutput::Signal`]: a change of the discrete tamper inputs a source knows about
//!   (cover switch, magnetic field sensor), fed to [`crate::events::TamperDetector`].
//!
//! Each source is a component with its own config section; [`SourceConfig`] is the tagged union
//! the agent's config file holds (`[source] type = "simulator" ...`), and
//! [`SourceConfig::build`] turns it into a boxed [`Source`].

pub mod pzem004t;
pub mod replay;
pub mod simulator;
pub mod spi_adc;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// The `[source]` section of the agent config: one of the source components, chosen by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Modelled loads through the real metrology path ([`simulator::SimulatorConfig`]).
    Simulator(simulator::SimulatorConfig),
    /// A recorded waveform ([`replay::ReplayConfig`]).
    Replay(replay::ReplayConfig),
    /// A PZEM-004T v3 over Modbus ([`pzem004t::Pzem004tConfig`]).
    Pzem004t(pzem004t::Pzem004tConfig),
    /// An MCP3008/MCP3208 ADC on spidev ([`spi_adc::SpiAdcConfig`]).
    SpiAdc(spi_adc::SpiAdcConfig),
}

impl SourceConfig {
    /// Build the configured source.
    ///
    /// `recordings` opens the recordings of `replay`; `None` reads CSV/WAV files with
    /// [`replay::RecordingFiles`]. `spi_adc` needs the `spidev` feature.
    pub fn build(
        &self,
        recordings: Option<std::sync::Arc<dyn replay::OpenRecording>>,
    ) -> Result<Box<dyn Source>, Error> {
        Ok(match self {
            SourceConfig::Simulator(c) => Box::new(simulator::SimulatorSource::from_config(c)?),
            SourceConfig::Replay(c) => {
                let opener =
                    recordings.unwrap_or_else(|| std::sync::Arc::new(replay::RecordingFiles));
                Box::new(replay::ReplaySource::new(c.clone(), opener)?)
            }
            SourceConfig::Pzem004t(c) => Box::new(pzem004t::Pzem004tSource::new(c.clone())?),
            SourceConfig::SpiAdc(c) => Box::new(spi_adc::SpiAdcSource::from_config(c)?),
        })
    }
}

/// How the channels of one frame are laid out in [`SampleChunk::samples`].
///
/// The order is the one of DESIGN §3.2 waveform files, so a recording replays unchanged:
/// `v,i` for one phase, `va,vb,vc,ia,ib,ic` (then `in` when present) for three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameLayout {
    /// Two channels per frame: `v, i`.
    SinglePhase,
    /// Six channels per frame: `va, vb, vc, ia, ib, ic`.
    ThreePhase,
    /// Seven channels per frame: `va, vb, vc, ia, ib, ic, in` (measured neutral current).
    ThreePhaseWithNeutral,
}

impl FrameLayout {
    /// Number of samples in one frame.
    pub const fn channels(self) -> usize {
        match self {
            FrameLayout::SinglePhase => 2,
            FrameLayout::ThreePhase => 6,
            FrameLayout::ThreePhaseWithNeutral => 7,
        }
    }

    /// Number of phases (voltage/current pairs) in one frame.
    pub const fn phases(self) -> usize {
        match self {
            FrameLayout::SinglePhase => 1,
            FrameLayout::ThreePhase | FrameLayout::ThreePhaseWithNeutral => 3,
        }
    }

    /// Index of the voltage channel of `phase` (0-based) inside a frame.
    pub const fn voltage_channel(self, phase: usize) -> usize {
        match self {
            FrameLayout::SinglePhase => 0,
            _ => phase,
        }
    }

    /// Index of the current channel of `phase` (0-based) inside a frame.
    pub const fn current_channel(self, phase: usize) -> usize {
        match self {
            FrameLayout::SinglePhase => 1,
            _ => 3 + phase,
        }
    }

    /// The same layout in `metrology`'s terms, for `metrology::AnalyzerConfig`.
    pub const fn metrology_layout(self) -> metrology::Layout {
        match self {
            FrameLayout::SinglePhase => metrology::Layout::SinglePhase,
            FrameLayout::ThreePhase => metrology::Layout::ThreePhaseFourWire {
                neutral_measured: false,
            },
            FrameLayout::ThreePhaseWithNeutral => metrology::Layout::ThreePhaseFourWire {
                neutral_measured: true,
            },
        }
    }

    /// Index of the neutral current channel, if the layout has one.
    pub const fn neutral_channel(self) -> Option<usize> {
        match self {
            FrameLayout::ThreePhaseWithNeutral => Some(6),
            _ => None,
        }
    }
}

/// A run of consecutive, equally spaced sample frames in volts and amperes.
///
/// Chunks from one source are gapless: the first frame of the next chunk follows the last frame
/// of this one by exactly one sample period, unless [`SampleChunk::discontinuity`] is set (a
/// replay that loops, a device that lost samples), which tells the analyser to restart its
/// windows rather than splice two unrelated signals.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleChunk {
    /// Source time of the first frame, in seconds since the source started.
    pub t0_s: f64,
    /// Frames per second.
    pub sample_rate_hz: f64,
    /// Channel layout of every frame.
    pub layout: FrameLayout,
    /// Interleaved frames: `samples.len()` is a multiple of `layout.channels()`.
    pub samples: Vec<f64>,
    /// True when this chunk does not continue the previous one.
    pub discontinuity: bool,
}

impl SampleChunk {
    /// Number of frames in the chunk.
    pub fn frames(&self) -> usize {
        self.samples.len() / self.layout.channels()
    }

    /// The `n`-th frame, or `None` past the end.
    pub fn frame(&self, n: usize) -> Option<&[f64]> {
        let c = self.layout.channels();
        self.samples.get(n * c..n * c + c)
    }

    /// Duration covered by the chunk, in seconds.
    pub fn duration_s(&self) -> f64 {
        self.frames() as f64 / self.sample_rate_hz
    }
}

/// One phase of a [`DeviceMeasurement`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasuredPhase {
    /// RMS voltage in volts.
    pub v_rms: f64,
    /// RMS current in amperes.
    pub i_rms: f64,
    /// Active power in watts (positive = import). Devices that cannot see the direction (the
    /// PZEM-004T) always report it positive.
    pub p_w: f64,
    /// Power factor as the device reports it (unsigned for the PZEM-004T), if it does.
    pub pf: Option<f64>,
}

/// Quantities a metering device computed itself, read at `t_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceMeasurement {
    /// Source time of the reading, seconds since the source started.
    pub t_s: f64,
    /// One entry per phase the device measures.
    pub phases: Vec<MeasuredPhase>,
    /// Line frequency in hertz, if reported.
    pub freq_hz: Option<f64>,
    /// The device's own import energy counter in watt-hours, if it keeps one. It can be reset on
    /// the device, so the pipeline must treat a decrease as a reset, never as negative energy.
    pub device_import_wh: Option<f64>,
    /// The device's over-power alarm flag, if it has one.
    pub alarm: Option<bool>,
}

/// A discrete input a source observes, for the tamper rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// Terminal or meter cover switch (true = open).
    CoverOpen,
    /// Hall-effect / reed magnetic field sensor (true = field above the sensor's limit).
    MagneticField,
    /// Manual push button on the meter, used for manual reconnection (true = pressed).
    ManualButton,
}

/// A discrete input changed level at `t_s`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Source time of the change, seconds since the source started.
    pub t_s: f64,
    /// Which input.
    pub kind: SignalKind,
    /// New level: true = active (open, field present, pressed).
    pub active: bool,
}

/// One item produced by a [`Source`].
#[derive(Clone, Debug, PartialEq)]
pub enum SourceOutput {
    /// Raw waveform frames, to be analysed by `metrology::Analyzer`.
    Samples(SampleChunk),
    /// Quantities the device measured itself.
    Measured(DeviceMeasurement),
    /// A discrete tamper/button input changed.
    Signal(Signal),
}

/// The future returned by [`Source::next`].
pub type NextOutput<'a> =
    Pin<Box<dyn Future<Output = Result<Option<SourceOutput>, Error>> + Send + 'a>>;

/// A producer of measurements for one meter.
///
/// `next` resolves when the next output is due: real-time sources pace themselves (a simulator
/// in real-time mode sleeps until the chunk's wall-clock time; a PZEM source waits for its poll
/// interval), faster-than-real-time sources resolve immediately. `Ok(None)` means the source has
/// ended for good (a replay played once); an `Err` is a fault the pipeline logs and counts, and
/// it may call `next` again (devices retry; a corrupt file returns the same error).
///
/// Sources are cancel-safe at `next`: dropping the future loses no produced data, so the pipeline
/// can `tokio::select!` on it against its shutdown signal.
pub trait Source: Send {
    /// Short name for logs and metrics (`simulator`, `replay`, `pzem004t`, `spi_adc`).
    fn name(&self) -> &'static str;

    /// The next output, or `None` at the end of the stream.
    fn next(&mut self) -> NextOutput<'_>;

    /// The disconnect relay changed: `false` when it is open. A source that models the loads
    /// (the simulator) stops their current; a hardware source measures whatever the physical
    /// relay does and ignores this (the default).
    fn set_load_connected(&mut self, _connected: bool) {}
}

/// What went wrong in a source.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// The kinds of [`Error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The source's configuration is invalid; the message says which field and why.
    Config(String),
    /// A scenario file could not be read or parsed; the message names the file and place.
    Scenario(String),
    /// A recording could not be read; the message names the file and line/offset.
    Recording(String),
    /// The device did not answer, answered wrongly, or the port failed.
    Device(String),
    /// An I/O error on a file or port, with what was being done.
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn config(msg: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Config(msg.into()),
        }
    }

    pub(crate) fn scenario(msg: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Scenario(msg.into()),
        }
    }

    pub(crate) fn recording(msg: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Recording(msg.into()),
        }
    }

    pub(crate) fn device(msg: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Device(msg.into()),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error {
            kind: ErrorKind::Io {
                context: context.into(),
                source,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Config(m) => write!(f, "invalid source config: {m}"),
            ErrorKind::Scenario(m) => write!(f, "invalid scenario: {m}"),
            ErrorKind::Recording(m) => write!(f, "bad recording: {m}"),
            ErrorKind::Device(m) => write!(f, "device error: {m}"),
            ErrorKind::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
