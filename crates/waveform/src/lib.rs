//! `waveform`: streaming readers for recorded voltage and current waveforms (DESIGN §3.2).
//!
//! `wattline analyze` and the agent's `replay` source read recordings through this crate and
//! feed them to the `metrology` analyser. It is a crate of its own, with no dependency beyond
//! `metrology` and a float parser, so the fuzz targets in `fuzz/` drive exactly the code the
//! binary runs without building the rest of wattline.
//!
//! - [`Waveform::open`] sniffs the format (a RIFF/WAVE header, else CSV) and reads the header;
//! - [`Waveform::read_frames`] then appends samples in constant memory, frame by frame, in the
//!   canonical channel order of the recording's [`Layout`]: `v, i` for one phase, `va, vb, vc,
//!   ia, ib, ic` for three, followed by `in` when the neutral current was recorded;
//! - every problem in the input is an [`Error`] with an [`ErrorKind`] and a [`Location`] (line and
//!   column for CSV, byte offset for WAV); nothing panics and no sample is dropped silently.
//!
//! ```
//! use waveform::{Layout, ReadOptions, Waveform};
//!
//! let csv = "t,v,i\n0.0,0.0,0.0\n0.000125,1.5,0.25\n0.00025,3.0,0.5\n";
//! let mut recording = Waveform::open(csv.as_bytes(), &ReadOptions::default())?;
//! assert_eq!(recording.layout(), Layout::SinglePhase);
//! assert_eq!(recording.sample_rate_hz(), 8000.0);
//!
//! let mut frames = Vec::new();
//! while recording.read_frames(&mut frames, 4096)? > 0 {}
//! assert_eq!(frames, [0.0, 0.0, 1.5, 0.25, 3.0, 0.5]);
//! # Ok::<(), waveform::Error>(())
//! ```

mod csv;
mod error;
mod wav;

use std::io::Read;

pub use csv::CsvReader;
pub use error::{Error, ErrorKind, Location};
/// The conductors a recording holds, which fixes a frame's channel order: the metrology crate's
/// own type, so frames go to the `Analyzer` as they are.
pub use metrology::Layout;
pub use wav::WavReader;

/// Whether channel `index` of a frame in `layout` is a voltage (voltages come first).
pub(crate) const fn is_voltage(layout: Layout, index: usize) -> bool {
    index < layout.phases()
}

/// How to interpret a recording's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadOptions {
    /// Sample rate. Required for CSV without a `t` column; must agree with `t` or the WAV header
    /// when those give one.
    pub rate_hz: Option<f64>,
    /// Factor from file units to volts (CSV: numbers are volts unless scaled; WAV: full scale).
    pub v_scale: f64,
    /// Factor from file units to amperes.
    pub i_scale: f64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            rate_hz: None,
            v_scale: 1.0,
            i_scale: 1.0,
        }
    }
}

/// The lowest and highest sample rates the readers accept. Below 100 Hz no mains cycle can be
/// resolved at all; above 100 MHz the number is a unit mistake (e.g. a period given as a rate).
pub const RATE_RANGE_HZ: (f64, f64) = (100.0, 100.0e6);

pub(crate) fn check_rate(rate_hz: f64, location: Location) -> Result<f64, Error> {
    if rate_hz.is_finite() && (RATE_RANGE_HZ.0..=RATE_RANGE_HZ.1).contains(&rate_hz) {
        Ok(rate_hz)
    } else {
        Err(Error::new(ErrorKind::InvalidRate(rate_hz), location))
    }
}

/// The container format of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Wav,
}

/// A recording opened for streaming, whatever its format.
#[derive(Debug)]
pub struct Waveform<R> {
    inner: Inner<R>,
}

#[derive(Debug)]
enum Inner<R> {
    Csv(CsvReader<Sniffed<R>>),
    Wav(WavReader<Sniffed<R>>),
}

impl<R: Read> Waveform<R> {
    /// Reads the start of `src`, decides between WAV (a `RIFF....WAVE` header) and CSV, and
    /// reads the header (and, for CSV with a `t` column, enough rows to know the sample rate).
    pub fn open(mut src: R, options: &ReadOptions) -> Result<Self, Error> {
        let mut head = [0u8; 12];
        let mut len = 0;
        while len < head.len() {
            match src.read(&mut head[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::new(ErrorKind::Io(e), Location::File)),
            }
        }
        let is_wav = len == 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE";
        let sniffed = Sniffed {
            head,
            len,
            pos: 0,
            inner: src,
        };
        let inner = if is_wav {
            Inner::Wav(WavReader::new(sniffed, options)?)
        } else {
            Inner::Csv(CsvReader::new(sniffed, options)?)
        };
        Ok(Waveform { inner })
    }

    /// The container format.
    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Csv(_) => Format::Csv,
            Inner::Wav(_) => Format::Wav,
        }
    }

    /// The (voltage, current) magnitudes, in scaled units, at which the recording's converter
    /// saturated: known for integer PCM WAV files ([`WavReader::saturation`]), `None` for CSV
    /// and float WAV, whose numbers have no full scale.
    pub fn saturation(&self) -> Option<(f64, f64)> {
        match &self.inner {
            Inner::Csv(_) => None,
            Inner::Wav(r) => r.saturation(),
        }
    }

    /// The conductors the recording holds.
    pub fn layout(&self) -> Layout {
        match &self.inner {
            Inner::Csv(r) => r.layout(),
            Inner::Wav(r) => r.layout(),
        }
    }

    /// The time of the first sample on the recording's own axis (a CSV `t` column), if any.
    pub fn start_time_s(&self) -> Option<f64> {
        match &self.inner {
            Inner::Csv(r) => r.start_time_s(),
            Inner::Wav(_) => None,
        }
    }

    /// Samples per second per channel.
    pub fn sample_rate_hz(&self) -> f64 {
        match &self.inner {
            Inner::Csv(r) => r.sample_rate_hz(),
            Inner::Wav(r) => r.sample_rate_hz(),
        }
    }

    /// Appends up to `max_frames` frames to `out` (each `layout().channels()` values, scaled to
    /// volts and amperes) and returns how many it appended; 0 means the recording has ended.
    pub fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error> {
        match &mut self.inner {
            Inner::Csv(r) => r.read_frames(out, max_frames),
            Inner::Wav(r) => r.read_frames(out, max_frames),
        }
    }
}

/// A reader that replays the bytes [`Waveform::open`] looked at before handing on the rest.
#[derive(Debug)]
pub struct Sniffed<R> {
    head: [u8; 12],
    len: usize,
    pos: usize,
    inner: R,
}

impl<R: Read> Read for Sniffed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}
