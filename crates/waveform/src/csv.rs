//! Streaming CSV waveform reader: header mapping, byte-level number parsing, time checks.
//!
//! The reader reads 1 MiB at a time into one reused buffer and parses numbers straight from
//! the bytes with `fast-float2` (an Eisel–Lemire parser that takes `&[u8]`, so no line is ever
//! turned into a `String` and no UTF-8 check runs per cell). Memory stays constant whatever the
//! file's size: the buffer, the header and a look-ahead of at most [`LOOKAHEAD_ROWS`] rows.

use std::io::Read;

use crate::error::{Error, ErrorKind, Location};
use crate::{Layout, ReadOptions, check_rate, is_voltage};

/// Bytes requested from the source per refill.
const CHUNK_BYTES: usize = 1 << 20;
/// The buffer's first size; it doubles while reads fill it, up to one chunk plus one line.
const INITIAL_BUFFER_BYTES: usize = 1 << 14;
/// The longest line accepted. A waveform row is a few dozen bytes; a longer line is not CSV
/// waveform data, and the limit keeps memory bounded on such input.
pub const MAX_LINE_BYTES: usize = 1 << 16;
/// Rows read when the file is opened: with a `t` column they give the sample rate from the mean
/// step rather than from one (rounded) interval, and in any file a bad row among them is
/// reported before any output.
pub const LOOKAHEAD_ROWS: usize = 1 << 16;
/// Relative deviation of one time step from the mean step that still counts as uniform. Rounded
/// time stamps (six decimals at 7 kHz) jitter by under 1 %; a missing sample doubles the step.
const STEP_TOLERANCE: f64 = 0.1;
/// Relative difference between `--rate` and the rate `t` gives that counts as agreement.
const RATE_AGREEMENT: f64 = 1e-3;

/// Slot value marking the `t` column (other slots are channel indices in frame order).
const TIME: u8 = u8::MAX;
const MAX_CHANNELS: usize = 7;

/// Streaming reader of a CSV waveform (DESIGN §3.2).
#[derive(Debug)]
pub struct CsvReader<R> {
    src: R,
    buf: Vec<u8>,
    /// Next unparsed byte.
    start: usize,
    /// End of the complete lines in `buf` (one past a `\n`).
    complete_end: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    eof: bool,
    /// Set after an error: the reader then yields nothing more.
    failed: bool,
    /// Number of the last line consumed (1-based).
    line: u64,
    names: Vec<String>,
    /// Per file column: the channel it feeds, or [`TIME`].
    slots: Vec<u8>,
    time_column: Option<usize>,
    scales: [f64; MAX_CHANNELS],
    layout: Layout,
    rate_hz: f64,
    time: Option<TimeTrack>,
    start_time_s: Option<f64>,
    /// Frames read during `new` (the look-ahead), served before anything else.
    ahead: Vec<f64>,
    ahead_pos: usize,
}

/// The uniform-time check carried from row to row.
#[derive(Debug, Clone, Copy)]
struct TimeTrack {
    step_s: f64,
    previous_s: f64,
    min_step_s: f64,
    max_step_s: f64,
}

/// A problem in one row, before the line number and column name are attached.
struct RowError {
    /// 0-based file column.
    column: usize,
    kind: ErrorKind,
}

impl<R: Read> CsvReader<R> {
    /// Reads the header and a look-ahead of rows, and settles the layout and sample rate.
    pub fn new(src: R, options: &ReadOptions) -> Result<Self, Error> {
        let mut reader = CsvReader {
            src,
            // Grows up to CHUNK_BYTES + MAX_LINE_BYTES as the file proves long; small files and
            // fuzz inputs stay small. One spare byte holds a missing final newline.
            buf: vec![0; INITIAL_BUFFER_BYTES + 1],
            start: 0,
            complete_end: 0,
            end: 0,
            eof: false,
            failed: false,
            line: 0,
            names: Vec::new(),
            slots: Vec::new(),
            time_column: None,
            scales: [1.0; MAX_CHANNELS],
            layout: Layout::SinglePhase,
            rate_hz: 0.0,
            time: None,
            start_time_s: None,
            ahead: Vec::new(),
            ahead_pos: 0,
        };
        reader.read_header(options)?;
        reader.read_ahead(options)?;
        Ok(reader)
    }

    /// The conductors the file holds.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The `t` of the first row, when the file has a `t` column.
    pub fn start_time_s(&self) -> Option<f64> {
        self.start_time_s
    }

    /// The sample rate, from `--rate` or derived from the `t` column.
    pub fn sample_rate_hz(&self) -> f64 {
        self.rate_hz
    }

    /// Appends up to `max_frames` frames to `out`; returns how many (0 at the end of the file).
    pub fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error> {
        let channels = self.layout.channels();
        if self.ahead_pos < self.ahead.len() {
            let frames = ((self.ahead.len() - self.ahead_pos) / channels).min(max_frames);
            let stop = self.ahead_pos + frames * channels;
            out.extend_from_slice(&self.ahead[self.ahead_pos..stop]);
            self.ahead_pos = stop;
            if self.ahead_pos == self.ahead.len() {
                // The look-ahead is served; give its memory back.
                self.ahead = Vec::new();
                self.ahead_pos = 0;
            }
            return Ok(frames);
        }
        if self.failed {
            return Ok(0);
        }
        let result = self.parse_frames(out, max_frames, None);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Parses up to `max_frames` rows into `out`, checking time against `self.time`, or
    /// collecting `(t, line)` into `collect` when the step is not known yet.
    fn parse_frames(
        &mut self,
        out: &mut Vec<f64>,
        max_frames: usize,
        mut collect: Option<&mut Vec<(f64, u64)>>,
    ) -> Result<usize, Error> {
        let channels = self.layout.channels();
        let mut frame = [0.0f64; MAX_CHANNELS];
        let mut frames = 0;
        while frames < max_frames {
            if self.start == self.complete_end && !self.fill()? {
                break;
            }
            let data = &self.buf[..self.complete_end];
            let mut p = self.start;
            let mut line = self.line;
            let mut time = self.time;
            while p < data.len() && frames < max_frames {
                line += 1;
                // Blank lines (e.g. a trailing empty line) hold no samples; skip them.
                if data[p] == b'\n' {
                    p += 1;
                    continue;
                }
                if data[p] == b'\r' && data[p + 1] == b'\n' {
                    p += 2;
                    continue;
                }
                let row_start = p;
                let t_s = match parse_row(data, &mut p, &self.slots, &self.scales, &mut frame) {
                    Ok(t_s) => t_s,
                    Err(e) => {
                        let error = self.row_error(data, row_start, line, e);
                        self.line = line;
                        return Err(error);
                    }
                };
                if let Some(track) = &mut time {
                    let step_s = t_s - track.previous_s;
                    if !(step_s >= track.min_step_s && step_s <= track.max_step_s) {
                        let kind = time_error(track.previous_s, t_s, track.step_s);
                        self.line = line;
                        return Err(self.cell_error(line, self.time_column.unwrap_or(0), kind));
                    }
                    track.previous_s = t_s;
                } else if let Some(times) = collect.as_deref_mut() {
                    times.push((t_s, line));
                }
                out.extend_from_slice(&frame[..channels]);
                frames += 1;
            }
            self.start = p;
            self.line = line;
            self.time = time;
        }
        Ok(frames)
    }

    /// Makes complete lines available in `buf[start..complete_end]`; false at the end of input.
    fn fill(&mut self) -> Result<bool, Error> {
        let tail = self.end - self.start;
        if tail > MAX_LINE_BYTES {
            return Err(Error::new(
                ErrorKind::LineTooLong {
                    limit_bytes: MAX_LINE_BYTES,
                },
                Location::Line(self.line + 1),
            ));
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = tail;
        self.complete_end = 0;
        let capacity = CHUNK_BYTES + MAX_LINE_BYTES;
        while !self.eof && self.end < CHUNK_BYTES {
            let usable = self.buf.len() - 1;
            if self.end == usable {
                let grown = (usable * 2).min(capacity) + 1;
                self.buf.resize(grown, 0);
            }
            let usable = self.buf.len() - 1;
            match self.src.read(&mut self.buf[self.end..usable]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::new(ErrorKind::Io(e), Location::Line(self.line + 1)));
                }
            }
        }
        if self.eof {
            if self.end == 0 {
                return Ok(false);
            }
            // The last line may lack its newline; give it one so every line ends alike.
            if self.buf[self.end - 1] != b'\n' {
                self.buf[self.end] = b'\n';
                self.end += 1;
            }
            self.complete_end = self.end;
            return Ok(true);
        }
        match self.buf[..self.end].iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                self.complete_end = last + 1;
                Ok(true)
            }
            None => Err(Error::new(
                ErrorKind::LineTooLong {
                    limit_bytes: MAX_LINE_BYTES,
                },
                Location::Line(self.line + 1),
            )),
        }
    }

    fn read_header(&mut self, options: &ReadOptions) -> Result<(), Error> {
        // Skip blank lines before the header; an empty or blank file is an error.
        let header = loop {
            if self.start == self.complete_end && !self.fill()? {
                return Err(Error::new(ErrorKind::Empty, Location::File));
            }
            let nl = self.buf[self.start..self.complete_end]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.complete_end, |i| self.start + i);
            let mut text = &self.buf[self.start..nl];
            if self.line == 0 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            self.start = (nl + 1).min(self.complete_end);
            self.line += 1;
            // Control bytes (other than tab and CR) or invalid UTF-8 mean binary data: a
            // damaged WAV file, say, which is better named than listed as a column.
            let control = text
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f);
            if control || core::str::from_utf8(text).is_err() {
                return Err(Error::new(ErrorKind::NotText, Location::Line(self.line)));
            }
            if !text.trim_ascii().is_empty() {
                break String::from_utf8_lossy(text).into_owned();
            }
        };
        let line = self.line;
        let mut names: Vec<String> = Vec::new();
        for (column, raw) in header.split(',').enumerate() {
            let name = raw.trim().trim_matches('"').trim().to_ascii_lowercase();
            let location = Location::Cell {
                line,
                column: column + 1,
                name: None,
            };
            if !matches!(
                name.as_str(),
                "t" | "v" | "i" | "va" | "vb" | "vc" | "ia" | "ib" | "ic" | "in"
            ) {
                return Err(Error::new(ErrorKind::UnknownColumn(name), location));
            }
            if names.contains(&name) {
                return Err(Error::new(ErrorKind::DuplicateColumn(name), location));
            }
            names.push(name);
        }
        let has = |n: &str| names.iter().any(|x| x == n);
        let single = has("v") || has("i");
        let three = ["va", "vb", "vc", "ia", "ib", "ic", "in"]
            .iter()
            .any(|n| has(n));
        self.layout = match (single, three) {
            (true, true) => {
                return Err(Error::new(ErrorKind::MixedLayout, Location::Line(line)));
            }
            (false, true) if has("in") => Layout::ThreePhaseFourWire {
                neutral_measured: true,
            },
            (false, true) => Layout::ThreePhaseFourWire {
                neutral_measured: false,
            },
            _ => Layout::SinglePhase,
        };
        let missing: Vec<&str> = self
            .layout
            .channel_names()
            .iter()
            .copied()
            .filter(|n| !has(n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::MissingColumns(missing.join(", ")),
                Location::Line(line),
            ));
        }
        let order = self.layout.channel_names();
        self.slots = names
            .iter()
            .map(|n| order.iter().position(|c| c == n).map_or(TIME, |i| i as u8))
            .collect();
        self.time_column = names.iter().position(|n| n == "t");
        for (index, scale) in self.scales.iter_mut().enumerate() {
            *scale = if is_voltage(self.layout, index) {
                options.v_scale
            } else {
                options.i_scale
            };
        }
        self.names = names;
        Ok(())
    }

    /// Reads the first rows: proves the file holds samples and, with a `t` column, derives the
    /// sample rate from the mean step and checks every step of the look-ahead against it.
    fn read_ahead(&mut self, options: &ReadOptions) -> Result<(), Error> {
        let Some(t_column) = self.time_column else {
            let rate_hz = options
                .rate_hz
                .ok_or_else(|| Error::new(ErrorKind::RateRequired, Location::File))?;
            self.rate_hz = check_rate(rate_hz, Location::File)?;
            // Read ahead here too, so that a bad row near the top is reported before any output.
            let mut ahead = Vec::new();
            if self.parse_frames(&mut ahead, LOOKAHEAD_ROWS, None)? == 0 {
                return Err(Error::new(ErrorKind::Empty, Location::File));
            }
            self.ahead = ahead;
            return Ok(());
        };
        let mut ahead = Vec::new();
        let mut times = Vec::new();
        let rows = self.parse_frames(&mut ahead, LOOKAHEAD_ROWS, Some(&mut times))?;
        self.ahead = ahead;
        if rows == 0 {
            return Err(Error::new(ErrorKind::Empty, Location::File));
        }
        let (first_s, _) = times[0];
        let (last_s, _) = times[rows - 1];
        self.start_time_s = Some(first_s);
        let rate_hz = if rows >= 2 {
            // Check every step against the median step, which one bad row cannot move; then
            // take the rate from the mean step, which rounding of the time stamps cannot bias.
            let mut steps: Vec<f64> = times.windows(2).map(|w| w[1].0 - w[0].0).collect();
            steps.sort_unstable_by(f64::total_cmp);
            let median_s = steps[steps.len() / 2];
            let mut previous_s = first_s;
            for &(t_s, line) in &times[1..] {
                let step = t_s - previous_s;
                if !(step > 0.0
                    && step >= median_s * (1.0 - STEP_TOLERANCE)
                    && step <= median_s * (1.0 + STEP_TOLERANCE))
                {
                    let kind = time_error(previous_s, t_s, median_s);
                    self.failed = true;
                    return Err(self.cell_error(line, t_column, kind));
                }
                previous_s = t_s;
            }
            let step_s = (last_s - first_s) / (rows - 1) as f64;
            let track = TimeTrack {
                step_s,
                previous_s: last_s,
                min_step_s: step_s * (1.0 - STEP_TOLERANCE),
                max_step_s: step_s * (1.0 + STEP_TOLERANCE),
            };
            self.time = Some(track);
            let derived_hz = 1.0 / step_s;
            if let Some(given_hz) = options.rate_hz
                && (given_hz - derived_hz).abs() > RATE_AGREEMENT * derived_hz
            {
                return Err(Error::new(
                    ErrorKind::RateMismatch {
                        given_hz,
                        file_hz: derived_hz,
                    },
                    Location::File,
                ));
            }
            derived_hz
        } else {
            // One row cannot give a step; a given rate still makes it a (tiny) recording.
            let given_hz = options
                .rate_hz
                .ok_or_else(|| Error::new(ErrorKind::TooFewRowsForRate, Location::File))?;
            self.time = Some(TimeTrack {
                step_s: 1.0 / given_hz,
                previous_s: last_s,
                min_step_s: (1.0 - STEP_TOLERANCE) / given_hz,
                max_step_s: (1.0 + STEP_TOLERANCE) / given_hz,
            });
            given_hz
        };
        self.rate_hz = check_rate(rate_hz, Location::File)?;
        Ok(())
    }

    fn cell_error(&self, line: u64, column: usize, kind: ErrorKind) -> Error {
        Error::new(
            kind,
            Location::Cell {
                line,
                column: column + 1,
                name: self.names.get(column).cloned(),
            },
        )
    }

    /// Turns a row problem into an error, reporting a wrong cell count before a bad cell.
    fn row_error(&self, data: &[u8], row_start: usize, line: u64, e: RowError) -> Error {
        let row_end = data[row_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| row_start + i);
        let row = &data[row_start..row_end];
        let found = 1 + row.iter().filter(|&&b| b == b',').count();
        let expected = self.slots.len();
        if found != expected {
            let column = if found < expected { found } else { expected };
            return self.cell_error(line, column, ErrorKind::RaggedRow { expected, found });
        }
        self.cell_error(line, e.column, e.kind)
    }
}

fn time_error(previous_s: f64, this_s: f64, step_s: f64) -> ErrorKind {
    if this_s > previous_s {
        ErrorKind::TimeNotUniform {
            interval_s: this_s - previous_s,
            expected_s: step_s,
        }
    } else {
        ErrorKind::TimeNotIncreasing { previous_s, this_s }
    }
}

/// Parses one row starting at `*p` (which `data` guarantees to end with `\n`), writes the
/// scaled channel values into `frame` and returns `t` (NaN without a `t` column).
#[inline]
fn parse_row(
    data: &[u8],
    p: &mut usize,
    slots: &[u8],
    scales: &[f64; MAX_CHANNELS],
    frame: &mut [f64; MAX_CHANNELS],
) -> Result<f64, RowError> {
    let last = slots.len() - 1;
    let mut t_s = f64::NAN;
    let mut q = *p;
    for (column, &slot) in slots.iter().enumerate() {
        while data[q] == b' ' || data[q] == b'\t' {
            q += 1;
        }
        let cell_start = q;
        let value = match fast_float2::parse_partial::<f64, _>(&data[q..]) {
            Ok((value, used)) => {
                q += used;
                value
            }
            Err(_) => return Err(bad_cell(data, cell_start, column)),
        };
        while data[q] == b' ' || data[q] == b'\t' {
            q += 1;
        }
        let delimiter_ok = if column < last {
            data[q] == b','
        } else if data[q] == b'\r' && data[q + 1] == b'\n' {
            q += 1;
            true
        } else {
            data[q] == b'\n'
        };
        if !delimiter_ok {
            return Err(bad_cell(data, cell_start, column));
        }
        q += 1;
        if slot == TIME {
            t_s = value;
        } else {
            let channel = usize::from(slot);
            frame[channel] = value * scales[channel];
        }
        // Checked after scaling: a finite cell times a large scale can still overflow.
        if !(value.is_finite() && (slot == TIME || frame[usize::from(slot)].is_finite())) {
            let text = cell_text(data, cell_start);
            let kind = if value.is_finite() {
                ErrorKind::ScaledOverflow(text)
            } else {
                ErrorKind::NotFinite(text)
            };
            return Err(RowError { column, kind });
        }
    }
    *p = q;
    Ok(t_s)
}

/// The error for a cell that does not hold exactly one number.
#[cold]
fn bad_cell(data: &[u8], cell_start: usize, column: usize) -> RowError {
    let text = cell_text(data, cell_start);
    let kind = if text.is_empty() {
        ErrorKind::EmptyCell
    } else {
        ErrorKind::NotANumber(text)
    };
    RowError { column, kind }
}

/// The text of the cell starting at `start`, trimmed and shortened for an error message.
fn cell_text(data: &[u8], start: usize) -> String {
    let end = data[start..]
        .iter()
        .position(|&b| b == b',' || b == b'\n')
        .map_or(data.len(), |i| start + i);
    let cell = data[start..end].trim_ascii();
    let text = String::from_utf8_lossy(cell);
    if text.chars().count() > 40 {
        let short: String = text.chars().take(40).collect();
        format!("{short}…")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(text: &str, rate_hz: Option<f64>) -> Result<CsvReader<&[u8]>, Error> {
        let options = ReadOptions {
            rate_hz,
            ..ReadOptions::default()
        };
        CsvReader::new(text.as_bytes(), &options)
    }

    fn read_all(text: &str, rate_hz: Option<f64>) -> Result<Vec<f64>, Error> {
        let mut reader = open(text, rate_hz)?;
        let mut out = Vec::new();
        while reader.read_frames(&mut out, 3)? > 0 {}
        Ok(out)
    }

    fn error(text: &str, rate_hz: Option<f64>) -> String {
        read_all(text, rate_hz).unwrap_err().to_string()
    }

    #[test]
    fn single_phase_with_time_gives_rate_and_frames() {
        let reader = open("t,v,i\n0,1,2\n0.001,3,4\n0.002,5,6\n", None).unwrap();
        assert_eq!(reader.layout(), Layout::SinglePhase);
        assert!((reader.sample_rate_hz() - 1000.0).abs() < 1e-9);
        let frames = read_all("t,v,i\n0,1,2\n0.001,3,4\n0.002,5,6\n", None).unwrap();
        assert_eq!(frames, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn columns_in_any_order_map_to_canonical_order() {
        let text = "ic,in,ib,ia,vc,vb,va\n7,8,6,5,3,2,1\n";
        let reader = open(text, Some(1000.0)).unwrap();
        assert_eq!(
            reader.layout(),
            Layout::ThreePhaseFourWire {
                neutral_measured: true
            }
        );
        let frames = read_all(text, Some(1000.0)).unwrap();
        assert_eq!(frames, [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    fn scales_apply_to_voltage_and_current_channels() {
        let options = ReadOptions {
            rate_hz: Some(1000.0),
            v_scale: 10.0,
            i_scale: 0.5,
        };
        let mut reader = CsvReader::new("i,v\n2,3\n".as_bytes(), &options).unwrap();
        let mut out = Vec::new();
        reader.read_frames(&mut out, 10).unwrap();
        assert_eq!(out, [30.0, 1.0]);
    }

    #[test]
    fn crlf_bom_spaces_quotes_and_missing_final_newline_are_accepted() {
        let text = "\u{feff}\"V\" , I\r\n 1.5 , -2e-1 \r\n3,4";
        assert_eq!(read_all(text, Some(500.0)).unwrap(), [1.5, -0.2, 3.0, 4.0]);
    }

    #[test]
    fn binary_data_is_named_as_such_not_listed_as_a_column() {
        let expected = "line 1: binary data where a CSV header should be: the file is neither a WAV \
                        file (no RIFF/WAVE header) nor CSV text";
        assert_eq!(error("RIFX\u{0}\u{1}junk,v\n", Some(1e3)), expected);
        let options = ReadOptions {
            rate_hz: Some(1e3),
            ..ReadOptions::default()
        };
        let invalid_utf8: &[u8] = b"v,\xff\xfei\n1,2\n";
        let Err(err) = CsvReader::new(invalid_utf8, &options) else {
            panic!("invalid UTF-8 in the header was accepted");
        };
        assert_eq!(err.to_string(), expected);
        // Tabs and CRs are text.
        assert_eq!(read_all("v,\ti\r\n1,2\r\n", Some(1e3)).unwrap(), [1.0, 2.0]);
    }

    #[test]
    fn header_errors_name_the_column() {
        assert_eq!(
            error("v,i,x\n1,2,3\n", Some(1e3)),
            "line 1, column 3: unknown column \"x\" (expected t, v, i or t, va, vb, vc, ia, ib, ic, in)"
        );
        assert_eq!(
            error("v,i,v\n", Some(1e3)),
            "line 1, column 3: column \"v\" appears twice"
        );
        assert_eq!(
            error("va,vb,vc,ia,ic\n", Some(1e3)),
            "line 1: the header lacks column(s) ib"
        );
        assert!(error("v,ia\n", Some(1e3)).contains("mixes"));
        assert_eq!(error("", Some(1e3)), "the recording holds no samples");
        assert_eq!(error("\n\n", Some(1e3)), "the recording holds no samples");
        assert_eq!(error("v,i\n", Some(1e3)), "the recording holds no samples");
    }

    #[test]
    fn cell_errors_name_line_and_column() {
        let text = "v,i\n1,2\n3,abc\n";
        assert_eq!(
            error(text, Some(1e3)),
            "line 3, column 2 (i): \"abc\" is not a number"
        );
        assert_eq!(
            error("v,i\n1,2\n3,4x\n", Some(1e3)),
            "line 3, column 2 (i): \"4x\" is not a number"
        );
        assert_eq!(
            error("v,i\n1,\n", Some(1e3)),
            "line 2, column 2 (i): the cell is empty"
        );
        assert_eq!(
            error("v,i\nnan,1\n", Some(1e3)),
            "line 2, column 1 (v): \"nan\" is not a finite number"
        );
        assert_eq!(
            error("v,i\n1,-inf\n", Some(1e3)),
            "line 2, column 2 (i): \"-inf\" is not a finite number"
        );
        assert_eq!(
            error("v,i\n1,2\n1\n", Some(1e3)),
            "line 3, column 2 (i): the row has 1 cells but the header has 2 columns"
        );
        assert_eq!(
            error("v,i\n1,2,3\n", Some(1e3)),
            "line 2, column 3: the row has 3 cells but the header has 2 columns"
        );
    }

    #[test]
    fn errors_deep_in_a_file_carry_the_right_line() {
        // Far beyond the look-ahead and several refills: line counting must survive both.
        let mut text = String::from("t,v,i\n");
        let rows = 200_000;
        for k in 0..rows {
            text.push_str(&format!("{:.6},{}.25,-1.5\n", k as f64 / 8000.0, k % 400));
        }
        text.push_str("25.000000,1,oops\n");
        assert_eq!(
            error(&text, None),
            format!("line {}, column 3 (i): \"oops\" is not a number", rows + 2)
        );
    }

    #[test]
    fn a_scale_that_overflows_is_an_error() {
        let options = ReadOptions {
            rate_hz: Some(1000.0),
            v_scale: 1e300,
            i_scale: 1.0,
        };
        let error = CsvReader::new("v,i\n1e10,1\n".as_bytes(), &options).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 2, column 1 (v): \"1e10\" times the scale is not a finite number"
        );
        // A number too large for f64 is infinite before any scaling.
        let error = CsvReader::new("v,i\n1,1e309\n".as_bytes(), &options).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 2, column 2 (i): \"1e309\" is not a finite number"
        );
    }

    #[test]
    fn rate_is_required_without_time_and_checked() {
        assert_eq!(
            error("v,i\n1,2\n", None),
            "the file has no t column, so the sample rate must be given with --rate HZ"
        );
        assert!(error("v,i\n1,2\n", Some(0.0)).contains("not usable"));
        assert!(error("v,i\n1,2\n", Some(f64::NAN)).contains("not usable"));
        assert!(error("t,v,i\n0,1,2\n1,1,2\n", None).contains("not usable"));
        assert!(error("t,v,i\n0,1,2\n0.001,1,2\n", Some(2000.0)).contains("disagrees"));
        assert_eq!(
            error("t,v,i\n0,1,2\n", None),
            "a t column needs at least two rows to give the sample rate"
        );
    }

    #[test]
    fn non_uniform_or_decreasing_time_is_rejected_with_its_line() {
        let mut text = String::from("t,v,i\n");
        for k in 0..100 {
            text.push_str(&format!("{},1,2\n", k as f64 * 0.001));
        }
        let gap = text.clone() + "0.101,1,2\n";
        let message = error(&gap, None);
        assert!(
            message.starts_with("line 102, column 1 (t): the time step is"),
            "{message}"
        );
        let back = text.clone() + "0.05,1,2\n";
        assert!(error(&back, None).starts_with("line 102, column 1 (t): time goes from"));
        // Within the look-ahead too.
        let early = "t,v,i\n0,1,2\n0.001,1,2\n0.001,1,2\n0.003,1,2\n0.004,1,2\n";
        assert!(error(early, None).starts_with("line 4, column 1 (t): time goes from"));
    }

    #[test]
    fn rounded_time_stamps_still_give_an_accurate_rate() {
        let mut text = String::from("t,v,i\n");
        for k in 0..7000 {
            text.push_str(&format!("{:.6},1,2\n", k as f64 / 7000.0));
        }
        let reader = open(&text, None).unwrap();
        assert!((reader.sample_rate_hz() - 7000.0).abs() < 0.01);
    }

    /// A source that hands out at most `step` bytes per read, as pipes and sockets may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_survive_any_read_size_and_refill_boundary() {
        // Values exactly representable in the printed decimals, so the round trip is exact.
        let mut text = String::from("t,ia,ib,ic,va,vb,vc\r\n");
        let mut expected = Vec::new();
        let rows = 150_000; // beyond the look-ahead and more than one 1 MiB refill
        for k in 0..rows {
            let values: Vec<f64> = (0..6)
                .map(|c| ((k * 7 + c * 13) % 2001) as f64 / 8.0 - 125.0)
                .collect();
            text.push_str(&format!("{}", k as f64 / 4096.0));
            for v in &values {
                text.push_str(&format!(",{v}"));
            }
            text.push_str("\r\n");
            // File order ia, ib, ic, va, vb, vc; frame order va, vb, vc, ia, ib, ic.
            expected.extend_from_slice(&values[3..]);
            expected.extend_from_slice(&values[..3]);
        }
        for step in [1, 7, 4096, usize::MAX] {
            let source = Trickle {
                data: text.as_bytes(),
                step,
            };
            let options = ReadOptions::default();
            let mut reader = CsvReader::new(source, &options).unwrap();
            assert_eq!(reader.sample_rate_hz(), 4096.0);
            let mut out = Vec::new();
            while reader.read_frames(&mut out, 1000).unwrap() > 0 {}
            assert!(out == expected, "read size {step}");
        }
    }

    #[test]
    fn an_endless_line_is_an_error_not_unbounded_memory() {
        // Longer than one refill, so the reader must give up rather than keep buffering.
        let text = format!("v,i\n1,{}\n", "9".repeat(2 * CHUNK_BYTES));
        assert_eq!(
            error(&text, Some(1e3)),
            format!("line 2: the line is longer than {MAX_LINE_BYTES} bytes")
        );
    }
}
