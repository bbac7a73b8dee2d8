//! Streaming WAV waveform reader: a small RIFF parser for PCM 16/24/32-bit and IEEE float.
//!
//! Hand-written rather than `hound`: the subset we need (one `fmt ` chunk, one `data` chunk,
//! other chunks skipped) is a couple of hundred lines; owning it lets every error name the byte
//! offset where the file went wrong (hound's errors carry no position), keeps the whole parser
//! inside our fuzz target, and costs no dependency. Like hound it is strict: a `block_align`
//! or data size that is not a whole number of frames is an error, never silently trimmed.

use std::io::Read;

use crate::error::{Error, ErrorKind, Location};
use crate::{Layout, ReadOptions, check_rate, is_voltage};

const FORMAT_PCM: u16 = 1;
const FORMAT_FLOAT: u16 = 3;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// A `fmt ` chunk is 16, 18 or 40 bytes; anything far larger is not a WAV header.
const MAX_FMT_BYTES: u32 = 1024;
/// A data size meaning "unknown, read to the end" (written by streaming recorders).
const SIZE_UNKNOWN: u32 = u32::MAX;
/// Bytes converted per read.
const BLOCK_BYTES: usize = 1 << 16;
/// Relative difference between `--rate` and the header's rate that counts as agreement.
const RATE_AGREEMENT: f64 = 1e-3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Int16,
    Int24,
    Int32,
    Float32,
    Float64,
}

impl Encoding {
    const fn bytes(self) -> usize {
        match self {
            Encoding::Int16 => 2,
            Encoding::Int24 => 3,
            Encoding::Int32 | Encoding::Float32 => 4,
            Encoding::Float64 => 8,
        }
    }
}

/// Streaming reader of a WAV recording whose channels are in the CSV column order.
#[derive(Debug)]
pub struct WavReader<R> {
    src: R,
    layout: Layout,
    rate_hz: f64,
    encoding: Encoding,
    scales: [f64; 7],
    /// Data bytes still to read, or `None` when the header left the size open.
    remaining: Option<u64>,
    /// Byte offset of the next byte to read from `src`.
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> WavReader<R> {
    /// Reads the RIFF header up to the start of the samples.
    pub fn new(src: R, options: &ReadOptions) -> Result<Self, Error> {
        let mut reader = WavReader {
            src,
            layout: Layout::SinglePhase,
            rate_hz: 0.0,
            encoding: Encoding::Int16,
            scales: [1.0; 7],
            remaining: None,
            offset: 0,
            buf: Vec::new(),
            done: false,
        };
        reader.read_header(options)?;
        Ok(reader)
    }

    /// The conductors the file holds (from its channel count).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The header's sample rate.
    pub fn sample_rate_hz(&self) -> f64 {
        self.rate_hz
    }

    /// Where the converter saturated, in scaled units: (voltage, current) magnitudes reached
    /// only by a sample at an integer format's largest code (or its most negative one, which
    /// is a little further out). `None` for float samples, which have no fixed full scale.
    pub fn saturation(&self) -> Option<(f64, f64)> {
        let largest = match self.encoding {
            Encoding::Int16 => 32_767.0 / 32_768.0,
            Encoding::Int24 => 8_388_607.0 / 8_388_608.0,
            Encoding::Int32 => 2_147_483_647.0 / 2_147_483_648.0,
            Encoding::Float32 | Encoding::Float64 => return None,
        };
        // Voltages come first; the first current follows the phases' voltages.
        let current = self.layout.phases();
        Some((largest * self.scales[0], largest * self.scales[current]))
    }

    /// Appends up to `max_frames` frames to `out`; returns how many (0 at the end of the data).
    pub fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error> {
        if self.done || max_frames == 0 {
            return Ok(0);
        }
        let channels = self.layout.channels();
        let frame_bytes = channels * self.encoding.bytes();
        let mut want = (BLOCK_BYTES / frame_bytes).max(1).min(max_frames) * frame_bytes;
        if let Some(remaining) = self.remaining {
            want = want.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        self.buf.resize(want, 0);
        let start_offset = self.offset;
        let got = self.read_up_to(want)?;
        if got < want {
            self.done = true;
            if let Some(remaining) = self.remaining {
                return Err(Error::new(
                    ErrorKind::Truncated(format!(
                        "the data chunk ({} of its bytes are missing)",
                        remaining - got as u64
                    )),
                    Location::Byte(self.offset),
                ));
            }
            if got % frame_bytes != 0 {
                return Err(Error::new(
                    ErrorKind::Truncated("a sample frame".to_owned()),
                    Location::Byte(self.offset),
                ));
            }
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= got as u64;
            if *remaining == 0 {
                // Chunks after the data (e.g. LIST metadata) hold no samples.
                self.done = true;
            }
        }
        let frames = got / frame_bytes;
        let bytes = self.encoding.bytes();
        out.reserve(frames * channels);
        for (k, sample) in self.buf[..frames * frame_bytes]
            .chunks_exact(bytes)
            .enumerate()
        {
            let value = decode(self.encoding, sample);
            let scaled = value * self.scales[k % channels];
            if !scaled.is_finite() {
                self.done = true;
                let kind = if value.is_finite() {
                    ErrorKind::ScaledOverflow(value.to_string())
                } else {
                    ErrorKind::NotFinite(value.to_string())
                };
                return Err(Error::new(
                    kind,
                    Location::Byte(start_offset + (k * bytes) as u64),
                ));
            }
            out.push(scaled);
        }
        Ok(frames)
    }

    fn read_header(&mut self, options: &ReadOptions) -> Result<(), Error> {
        let mut riff = [0u8; 12];
        self.read_exact_or(&mut riff, "the RIFF header")?;
        if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
            return Err(Error::new(
                ErrorKind::Wav("not a RIFF/WAVE file".to_owned()),
                Location::Byte(0),
            ));
        }
        let mut format = None;
        loop {
            let chunk_offset = self.offset;
            let mut head = [0u8; 8];
            self.read_exact_or(&mut head, "the chunk list before any data chunk")?;
            let id = [head[0], head[1], head[2], head[3]];
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            match &id {
                b"fmt " => {
                    if !(16..=MAX_FMT_BYTES).contains(&size) {
                        return Err(wav_error(
                            format!("the fmt chunk has an implausible size of {size} bytes"),
                            chunk_offset + 4,
                        ));
                    }
                    let mut body = vec![0u8; size as usize + (size as usize & 1)];
                    self.read_exact_or(&mut body, "the fmt chunk")?;
                    format = Some(self.parse_format(&body[..size as usize], chunk_offset + 8)?);
                }
                b"data" => {
                    let Some((layout, encoding, rate_hz)) = format else {
                        return Err(wav_error(
                            "the data chunk comes before any fmt chunk".to_owned(),
                            chunk_offset,
                        ));
                    };
                    let frame_bytes = (layout.channels() * encoding.bytes()) as u32;
                    if size == 0 {
                        return Err(Error::new(ErrorKind::Empty, Location::Byte(chunk_offset)));
                    }
                    if size != SIZE_UNKNOWN && size % frame_bytes != 0 {
                        return Err(wav_error(
                            format!(
                                "the data chunk's {size} bytes are not a whole number of \
                                 {frame_bytes}-byte frames"
                            ),
                            chunk_offset + 4,
                        ));
                    }
                    self.remaining = (size != SIZE_UNKNOWN).then_some(u64::from(size));
                    self.layout = layout;
                    self.encoding = encoding;
                    if let Some(given_hz) = options.rate_hz
                        && (given_hz - rate_hz).abs() > RATE_AGREEMENT * rate_hz
                    {
                        return Err(Error::new(
                            ErrorKind::RateMismatch {
                                given_hz,
                                file_hz: rate_hz,
                            },
                            Location::File,
                        ));
                    }
                    for (index, scale) in self.scales.iter_mut().enumerate() {
                        *scale = if is_voltage(layout, index) {
                            options.v_scale
                        } else {
                            options.i_scale
                        };
                    }
                    self.rate_hz = rate_hz;
                    return Ok(());
                }
                _ => self.skip(u64::from(size) + u64::from(size & 1))?,
            }
        }
    }

    /// Parses a `fmt ` chunk body found at byte `at`.
    fn parse_format(&self, body: &[u8], at: u64) -> Result<(Layout, Encoding, f64), Error> {
        let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
        let mut tag = u16_at(0);
        let channels = u16_at(2);
        let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
        let block_align = u16_at(12);
        let bits = u16_at(14);
        if tag == FORMAT_EXTENSIBLE {
            // WAVEFORMATEXTENSIBLE: the real format is the first two bytes of the sub-format GUID.
            if body.len() < 40 {
                return Err(wav_error(
                    format!(
                        "an extensible fmt chunk needs 40 bytes, this one has {}",
                        body.len()
                    ),
                    at - 4,
                ));
            }
            tag = u16_at(24);
        }
        let encoding = match (tag, bits) {
            (FORMAT_PCM, 16) => Encoding::Int16,
            (FORMAT_PCM, 24) => Encoding::Int24,
            (FORMAT_PCM, 32) => Encoding::Int32,
            (FORMAT_FLOAT, 32) => Encoding::Float32,
            (FORMAT_FLOAT, 64) => Encoding::Float64,
            (FORMAT_PCM | FORMAT_FLOAT, _) => {
                return Err(wav_error(
                    format!(
                        "{bits}-bit samples are not supported (PCM 16, 24 or 32 bits, float 32 or 64)"
                    ),
                    at + 14,
                ));
            }
            _ => {
                return Err(wav_error(
                    format!("sample format 0x{tag:04x} is not supported (PCM or IEEE float only)"),
                    at,
                ));
            }
        };
        let layout = match channels {
            2 => Layout::SinglePhase,
            6 => Layout::ThreePhaseFourWire {
                neutral_measured: false,
            },
            7 => Layout::ThreePhaseFourWire {
                neutral_measured: true,
            },
            _ => {
                return Err(wav_error(
                    format!(
                        "{channels} channels do not match a layout (2: v, i; 6: va, vb, vc, ia, \
                         ib, ic; 7: the same and in)"
                    ),
                    at + 2,
                ));
            }
        };
        let frame_bytes = layout.channels() * encoding.bytes();
        if usize::from(block_align) != frame_bytes {
            return Err(wav_error(
                format!(
                    "block_align is {block_align} but {channels} channels of {bits} bits take \
                     {frame_bytes} bytes"
                ),
                at + 12,
            ));
        }
        let rate_hz = check_rate(f64::from(rate), Location::Byte(at + 4))?;
        Ok((layout, encoding, rate_hz))
    }

    /// Reads exactly `buf.len()` bytes, or says which structure the file ended in.
    fn read_exact_or(&mut self, buf: &mut [u8], inside: &str) -> Result<(), Error> {
        let got = self.read_into(buf)?;
        if got < buf.len() {
            return Err(Error::new(
                ErrorKind::Truncated(inside.to_owned()),
                Location::Byte(self.offset),
            ));
        }
        Ok(())
    }

    /// Fills `self.buf[..want]` as far as the source allows; returns the bytes read.
    fn read_up_to(&mut self, want: usize) -> Result<usize, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.read_into(&mut buf[..want]);
        self.buf = buf;
        result
    }

    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::new(ErrorKind::Io(e), Location::Byte(self.offset))),
            }
        }
        Ok(got)
    }

    /// Skips a chunk this reader does not use.
    fn skip(&mut self, bytes: u64) -> Result<(), Error> {
        let mut left = bytes;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            let got = self.read_into(&mut scratch[..n])?;
            if got < n {
                return Err(Error::new(
                    ErrorKind::Truncated("a chunk before the data chunk".to_owned()),
                    Location::Byte(self.offset),
                ));
            }
            left -= got as u64;
        }
        Ok(())
    }
}

fn wav_error(reason: String, at: u64) -> Error {
    Error::new(ErrorKind::Wav(reason), Location::Byte(at))
}

/// One little-endian sample, normalised to ±1.0 full scale.
#[inline]
fn decode(encoding: Encoding, b: &[u8]) -> f64 {
    match encoding {
        Encoding::Int16 => f64::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
        Encoding::Int24 => {
            // Sign-extend the 24-bit value by placing it in the top of an i32.
            let wide = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
            f64::from(wide) / 8_388_608.0
        }
        Encoding::Int32 => {
            f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0
        }
        Encoding::Float32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Encoding::Float64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a WAV file: `tag`, `channels`, `bits`, `rate`, raw little-endian sample bytes.
    fn wav(tag: u16, channels: u16, bits: u16, rate: u32, data: &[u8]) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF");
        f.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(b"LIST");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(b"abc\0");
        f.extend_from_slice(b"fmt ");
        f.extend_from_slice(&16u32.to_le_bytes());
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        f.extend_from_slice(&block.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f.extend_from_slice(b"data");
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    fn read(file: &[u8], options: &ReadOptions) -> Result<(Layout, f64, Vec<f64>), Error> {
        let mut reader = WavReader::new(file, options)?;
        let mut out = Vec::new();
        while reader.read_frames(&mut out, 1)? > 0 {}
        Ok((reader.layout(), reader.sample_rate_hz(), out))
    }

    #[test]
    fn pcm16_is_normalised_and_scaled() {
        let data: Vec<u8> = [16384i16, -32768, 32767, 0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let options = ReadOptions {
            rate_hz: None,
            v_scale: 400.0,
            i_scale: 10.0,
        };
        let (layout, rate, out) = read(&wav(1, 2, 16, 8000, &data), &options).unwrap();
        assert_eq!(layout, Layout::SinglePhase);
        assert_eq!(rate, 8000.0);
        assert_eq!(out, [200.0, -10.0, 400.0 * 32767.0 / 32768.0, 0.0]);
    }

    #[test]
    fn saturation_is_the_largest_code_scaled_per_channel_and_none_for_floats() {
        let options = ReadOptions {
            rate_hz: None,
            v_scale: 400.0,
            i_scale: 10.0,
        };
        let at = |tag, channels, bits| {
            let data = vec![0u8; usize::from(channels * bits / 8)];
            WavReader::new(&wav(tag, channels, bits, 8000, &data)[..], &options)
                .unwrap()
                .saturation()
        };
        // The largest code decodes to exactly this value, so a saturated sample reaches it.
        assert_eq!(
            at(1, 2, 16),
            Some((400.0 * 32767.0 / 32768.0, 10.0 * 32767.0 / 32768.0))
        );
        let full24 = 8_388_607.0 / 8_388_608.0;
        assert_eq!(at(1, 6, 24), Some((400.0 * full24, 10.0 * full24)));
        assert_eq!(at(3, 2, 32), None);
        assert_eq!(at(3, 2, 64), None);
    }

    #[test]
    fn pcm24_pcm32_and_floats_decode() {
        let data = [0x00, 0x00, 0x80, 0xff, 0xff, 0x7f];
        let (_, _, out) = read(&wav(1, 2, 24, 1000, &data), &ReadOptions::default()).unwrap();
        assert_eq!(out, [-1.0, 8_388_607.0 / 8_388_608.0]);
        let data: Vec<u8> = [i32::MIN, 1 << 30]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let (_, _, out) = read(&wav(1, 2, 32, 1000, &data), &ReadOptions::default()).unwrap();
        assert_eq!(out, [-1.0, 0.5]);
        let data: Vec<u8> = [0.25f32, -0.5]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let (_, _, out) = read(&wav(3, 2, 32, 1000, &data), &ReadOptions::default()).unwrap();
        assert_eq!(out, [0.25, -0.5]);
    }

    #[test]
    fn seven_channels_are_three_phase_with_neutral() {
        let data = vec![0u8; 7 * 2 * 3];
        let (layout, _, out) = read(&wav(1, 7, 16, 1000, &data), &ReadOptions::default()).unwrap();
        assert_eq!(
            layout,
            Layout::ThreePhaseFourWire {
                neutral_measured: true
            }
        );
        assert_eq!(out.len(), 21);
    }

    /// A source that hands out one byte per read.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn one_byte_reads_give_the_same_samples() {
        let data: Vec<u8> = (0..6 * 1000)
            .flat_map(|k: i32| (k * 1237 % 65536 - 32768).to_le_bytes()[..3].to_vec())
            .collect();
        let file = wav(1, 6, 24, 4000, &data);
        let whole = read(&file, &ReadOptions::default()).unwrap();
        let mut reader = WavReader::new(OneByte(&file), &ReadOptions::default()).unwrap();
        let mut out = Vec::new();
        while reader.read_frames(&mut out, 333).unwrap() > 0 {}
        assert_eq!(whole.2.len(), 6000);
        assert!(out == whole.2);
    }

    #[test]
    fn bad_files_give_located_errors() {
        let ok = wav(1, 2, 16, 8000, &[0; 8]);
        let message =
            |file: &[u8], options: &ReadOptions| read(file, options).unwrap_err().to_string();
        let defaults = ReadOptions::default();
        assert_eq!(
            message(&wav(1, 3, 16, 8000, &[0; 12]), &defaults),
            "byte 34: 3 channels do not match a layout (2: v, i; 6: va, vb, vc, ia, ib, ic; 7: the same and in)"
        );
        assert!(message(&wav(1, 2, 8, 8000, &[0; 8]), &defaults).contains("8-bit samples"));
        assert!(message(&wav(2, 2, 16, 8000, &[0; 8]), &defaults).contains("0x0002"));
        assert!(message(&wav(1, 2, 16, 10, &[0; 8]), &defaults).contains("not usable"));
        assert!(message(&ok[..40], &defaults).contains("ends inside the fmt chunk"));
        assert!(message(&ok[..ok.len() - 2], &defaults).contains("the data chunk (2 of its bytes"));
        let given = ReadOptions {
            rate_hz: Some(4000.0),
            ..defaults
        };
        assert!(message(&ok, &given).contains("disagrees"));
        let nan: Vec<u8> = [0.0f32, f32::NAN]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            message(&wav(3, 2, 32, 1000, &nan), &defaults),
            "byte 60: \"NaN\" is not a finite number"
        );
    }
}
