//! The `spi_adc` source: MCP3008/MCP3208 converters on Linux spidev (seed 004's voltage
//! transformer and current clamp, biased to mid-rail).
//!
//! Every frame converts the mapped channels one after the other (3-byte conversions, see
//! [`codec`]), so channel `j` of a frame is sampled `j · 24 / spi_hz` seconds after channel 0.
//! At 1 MHz that is 24 µs per channel — 0.43° at 50 Hz, enough to move a PF of 0.8 by 0.005.
//! The source therefore aligns every channel to its frame's instant by linear interpolation with
//! the channel's previous sample before handing the frame on ([`align_frames`]).
//!
//! Conversions run on a dedicated thread (the spidev ioctl blocks for a whole chunk) that sends
//! chunks over a bounded channel; frame times follow the nominal schedule (`frame n` at
//! `n / sample_rate_hz`). User-space spidev cannot guarantee that schedule exactly: the frame
//! spacing is requested with per-transfer delays and the kernel may stretch it under load, so
//! on a loaded Raspberry Pi expect frequency readings a little low; a hardware-timed ADC
//! (or a microcontroller front end) is the remedy, not more software.

pub mod codec;
mod config;
mod transfer;

pub use config::{ChannelMap, Chip, SignalName, SpiAdcConfig};
#[cfg(feature = "spidev")]
pub use transfer::Spidev;
pub use transfer::{RecordedSpi, SpiTransfer};

use std::io;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::{Error, FrameLayout, NextOutput, SampleChunk, Source, SourceOutput};
use codec::{CONVERSION_BYTES, CONVERSION_CLOCKS};

/// A validated plan of what one frame reads and where each value goes.
#[derive(Clone, Debug, PartialEq)]
pub struct FramePlan {
    chip: Chip,
    layout: FrameLayout,
    /// Per conversion, in read order: ADC channel, output index in the frame, scale, offset.
    reads: Vec<(u8, usize, f64, f64)>,
    /// Delay of each read after the frame instant, in fractions of a frame period.
    delay_frames: Vec<f64>,
    sample_rate_hz: f64,
}

impl FramePlan {
    /// Check `config` and derive the plan.
    pub fn new(config: &SpiAdcConfig) -> Result<FramePlan, Error> {
        let fs = config.sample_rate_hz;
        if !(fs.is_finite() && fs > 0.0) {
            return Err(Error::config(format!(
                "spi_adc.sample_rate_hz must be positive, got {fs}"
            )));
        }
        if config.spi_hz == 0 {
            return Err(Error::config("spi_adc.spi_hz must be positive"));
        }
        let signals: Vec<SignalName> = config.channels.iter().map(|c| c.signal).collect();
        let layout = layout_of(&signals)?;
        let full_scale = f64::from((1u32 << config.chip.bits()) - 1);
        let mut reads = Vec::new();
        let mut seen_adc = [false; 8];
        for (n, c) in config.channels.iter().enumerate() {
            let at = format!("spi_adc.channels[{n}]");
            if c.adc_channel > 7 {
                return Err(Error::config(format!(
                    "{at}.adc_channel must be 0..=7, got {}",
                    c.adc_channel
                )));
            }
            if std::mem::replace(&mut seen_adc[usize::from(c.adc_channel)], true) {
                return Err(Error::config(format!(
                    "{at}: adc_channel {} is mapped twice",
                    c.adc_channel
                )));
            }
            if !(c.scale.is_finite() && c.scale != 0.0) {
                return Err(Error::config(format!(
                    "{at}.scale must be a non-zero number, got {}",
                    c.scale
                )));
            }
            let offset = c
                .offset_counts
                .unwrap_or(f64::from(config.chip.mid_scale()));
            if !(0.0..=full_scale).contains(&offset) {
                return Err(Error::config(format!(
                    "{at}.offset_counts must be within 0..={full_scale} for {:?}, got {offset}",
                    config.chip
                )));
            }
            reads.push((
                c.adc_channel,
                output_index(layout, c.signal),
                c.scale,
                offset,
            ));
        }
        let conversion_s = f64::from(CONVERSION_CLOCKS) / f64::from(config.spi_hz);
        let frame_s = conversion_s * reads.len() as f64;
        if frame_s * fs > 1.0 {
            return Err(Error::config(format!(
                "spi_adc: {} conversions at {} Hz take {:.1} µs, longer than a frame at {fs} Hz",
                reads.len(),
                config.spi_hz,
                frame_s * 1e6
            )));
        }
        let delay_frames = (0..reads.len())
            .map(|j| j as f64 * conversion_s * fs)
            .collect();
        Ok(FramePlan {
            chip: config.chip,
            layout,
            reads,
            delay_frames,
            sample_rate_hz: fs,
        })
    }

    /// The layout of the frames produced.
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// MOSI bytes of one frame.
    pub fn frame_command(&self) -> Vec<u8> {
        self.reads
            .iter()
            .flat_map(|(ch, ..)| self.chip.command(*ch))
            .collect()
    }

    /// Bytes per frame.
    pub fn bytes_per_frame(&self) -> usize {
        self.reads.len() * CONVERSION_BYTES
    }

    /// Decode the MISO bytes of whole frames into physical values in layout order, *not yet*
    /// aligned (each value as sampled at its own conversion instant).
    pub fn decode_frames(&self, miso: &[u8], out: &mut Vec<f64>) -> Result<(), Error> {
        let bpf = self.bytes_per_frame();
        if !miso.len().is_multiple_of(bpf) {
            return Err(Error::device(format!(
                "{} MISO bytes are not whole frames of {bpf}",
                miso.len()
            )));
        }
        let channels = self.layout.channels();
        for (k, frame) in miso.chunks_exact(bpf).enumerate() {
            let base = out.len();
            out.resize(base + channels, 0.0);
            for (j, (bytes, (adc, idx, scale, offset))) in
                frame.chunks_exact(3).zip(&self.reads).enumerate()
            {
                let code = self
                    .chip
                    .decode([bytes[0], bytes[1], bytes[2]])
                    .map_err(|e| {
                        Error::device(format!(
                            "frame {k}, conversion {j} (adc channel {adc}): {e}"
                        ))
                    })?;
                out[base + idx] = (f64::from(code) - offset) * scale;
            }
        }
        Ok(())
    }
}

/// Align every channel of `frames` (layout order, as decoded) to its frame's instant: a value
/// sampled `d` frames late is replaced by the linear interpolation, at the frame instant, between
/// the previous and this sample of the same channel. `previous` carries the last raw frame
/// across chunks (empty before the first frame, which is then passed through unchanged).
pub fn align_frames(plan: &FramePlan, frames: &mut [f64], previous: &mut Vec<f64>) {
    let channels = plan.layout.channels();
    for frame in frames.chunks_exact_mut(channels) {
        let raw: Vec<f64> = frame.to_vec();
        if previous.len() == channels {
            for ((_, idx, ..), d) in plan.reads.iter().zip(&plan.delay_frames) {
                // x(t_k) = x[k−1] + (1 − d)·(x[k] − x[k−1]): x[k−1] was sampled at t_k − 1 + d.
                frame[*idx] = previous[*idx] + (1.0 - d) * (raw[*idx] - previous[*idx]);
            }
        }
        *previous = raw;
    }
}

fn layout_of(signals: &[SignalName]) -> Result<FrameLayout, Error> {
    use SignalName::*;
    let mut sorted = signals.to_vec();
    sorted.sort_by_key(|s| *s as u8);
    let has_dup = sorted.windows(2).any(|w| w[0] == w[1]);
    if has_dup {
        return Err(Error::config("spi_adc.channels: a signal is mapped twice"));
    }
    match sorted.as_slice() {
        [V, I] => Ok(FrameLayout::SinglePhase),
        [Va, Vb, Vc, Ia, Ib, Ic] => Ok(FrameLayout::ThreePhase),
        [Va, Vb, Vc, Ia, Ib, Ic, In] => Ok(FrameLayout::ThreePhaseWithNeutral),
        _ => Err(Error::config(format!(
            "spi_adc.channels map {signals:?}: need exactly v and i, or va vb vc ia ib ic (and optionally in)"
        ))),
    }
}

fn output_index(layout: FrameLayout, s: SignalName) -> usize {
    use SignalName::*;
    match s {
        V | Va => layout.voltage_channel(0),
        Vb => layout.voltage_channel(1),
        Vc => layout.voltage_channel(2),
        I | Ia => layout.current_channel(0),
        Ib => layout.current_channel(1),
        Ic => layout.current_channel(2),
        In => layout.neutral_channel().unwrap_or(6),
    }
}

type ChunkResult = Result<Option<SampleChunk>, Error>;

/// The SPI ADC as a [`Source`].
#[derive(Debug)]
pub struct SpiAdcSource {
    rx: mpsc::Receiver<ChunkResult>,
    /// Dropping this tells the conversion thread to stop.
    _stop: std_mpsc::Sender<()>,
    done: bool,
}

impl SpiAdcSource {
    /// Open the spidev device of `config` (feature `spidev`).
    #[cfg(feature = "spidev")]
    pub fn from_config(config: &SpiAdcConfig) -> Result<SpiAdcSource, Error> {
        let dev = Spidev::open(&config.device, config.spi_hz).map_err(|e| {
            Error::io(
                format!("cannot open spi device {}", config.device.display()),
                e,
            )
        })?;
        SpiAdcSource::with_transfer(config, Box::new(dev))
    }

    /// Without the `spidev` feature there is no device access: say so clearly.
    #[cfg(not(feature = "spidev"))]
    pub fn from_config(config: &SpiAdcConfig) -> Result<SpiAdcSource, Error> {
        FramePlan::new(config)?;
        Err(Error::config(format!(
            "spi_adc: this agent was built without the `spidev` feature, so it cannot open {}",
            config.device.display()
        )))
    }

    /// Run the converter through `transfer` (a real device or a recorded stream).
    pub fn with_transfer(
        config: &SpiAdcConfig,
        mut transfer: Box<dyn SpiTransfer>,
    ) -> Result<SpiAdcSource, Error> {
        let plan = FramePlan::new(config)?;
        if config.chunk_frames == 0 {
            return Err(Error::config("spi_adc.chunk_frames must be positive"));
        }
        let frames = config.chunk_frames;
        let (tx, rx) = mpsc::channel::<ChunkResult>(4);
        let (stop, stopped) = std_mpsc::channel::<()>();
        let period_us = (1e6 / plan.sample_rate_hz).round() as u32;
        std::thread::Builder::new()
            .name("spi-adc".into())
            .spawn(move || {
                let command: Vec<u8> = plan.frame_command().repeat(frames);
                let mut miso = vec![0u8; command.len()];
                let mut previous = Vec::new();
                let mut next_frame: u64 = 0;
                let mut gap = false;
                loop {
                    if matches!(
                        stopped.try_recv(),
                        Err(std_mpsc::TryRecvError::Disconnected)
                    ) {
                        return;
                    }
                    let result = match transfer.transfer(
                        &command,
                        &mut miso,
                        plan.bytes_per_frame(),
                        period_us,
                    ) {
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            let _ = tx.blocking_send(Ok(None));
                            return;
                        }
                        Err(e) => Err(Error::io("spi transfer failed", e)),
                        Ok(()) => {
                            let mut samples = Vec::with_capacity(frames * plan.layout.channels());
                            plan.decode_frames(&miso, &mut samples).map(|()| {
                                align_frames(&plan, &mut samples, &mut previous);
                                let chunk = SampleChunk {
                                    t0_s: next_frame as f64 / plan.sample_rate_hz,
                                    sample_rate_hz: plan.sample_rate_hz,
                                    layout: plan.layout,
                                    samples,
                                    discontinuity: gap,
                                };
                                Some(chunk)
                            })
                        }
                    };
                    next_frame += frames as u64;
                    let failed = result.is_err();
                    gap = failed;
                    if tx.blocking_send(result).is_err() {
                        return;
                    }
                    if failed {
                        // The samples of a failed chunk are lost: the next chunk must not be
                        // interpolated against stale values, and a device that keeps failing
                        // must not spin the CPU.
                        previous.clear();
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the spi-adc thread", e))?;
        Ok(SpiAdcSource {
            rx,
            _stop: stop,
            done: false,
        })
    }
}

impl Source for SpiAdcSource {
    fn name(&self) -> &'static str {
        "spi_adc"
    }

    fn next(&mut self) -> NextOutput<'_> {
        Box::pin(async move {
            if self.done {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Ok(Some(chunk))) => Ok(Some(SourceOutput::Samples(chunk))),
                Some(Err(e)) => Err(e),
                Some(Ok(None)) | None => {
                    self.done = true;
                    Ok(None)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
