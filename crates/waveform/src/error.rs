//! The waveform readers' error type: what was wrong with a recording and where.

use std::fmt;

/// Where in a recording an error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The error concerns the recording as a whole (e.g. it is empty).
    File,
    /// A line of a CSV file (1-based; the header is line 1).
    Line(u64),
    /// A cell of a CSV file: 1-based line and column, and the column's header name when known.
    Cell {
        line: u64,
        column: usize,
        name: Option<String>,
    },
    /// A byte offset into a binary (WAV) file, counted from 0.
    Byte(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line(line) => write!(f, "line {line}"),
            Location::Cell {
                line,
                column,
                name: Some(name),
            } => write!(f, "line {line}, column {column} ({name})"),
            Location::Cell {
                line,
                column,
                name: None,
            } => write!(f, "line {line}, column {column}"),
            Location::Byte(offset) => write!(f, "byte {offset}"),
        }
    }
}

/// What was wrong with a recording.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading the underlying file failed.
    Io(std::io::Error),
    /// The file holds no header, or a header and no samples.
    Empty,
    /// A header names a column that is not one of `t, v, i, va, vb, vc, ia, ib, ic, in`.
    UnknownColumn(String),
    /// A header names the same column twice.
    DuplicateColumn(String),
    /// The header lacks columns the layout it started needs (e.g. `v` without `i`).
    MissingColumns(String),
    /// The header mixes single-phase (`v`, `i`) and three-phase (`va` … `in`) columns.
    MixedLayout,
    /// A data row has a different number of cells than the header.
    RaggedRow { expected: usize, found: usize },
    /// A cell is empty.
    EmptyCell,
    /// A cell is not a decimal number; holds the cell's text (shortened).
    NotANumber(String),
    /// A cell or sample is NaN or infinite; holds its text.
    NotFinite(String),
    /// A finite cell or sample becomes infinite when multiplied by its scale; holds its text.
    ScaledOverflow(String),
    /// A line is longer than the reader accepts, which no waveform row can be.
    LineTooLong { limit_bytes: usize },
    /// The first line holds bytes that are not text: the file is neither a WAV file (it has no
    /// RIFF/WAVE header) nor CSV.
    NotText,
    /// Neither a `t` column nor a sample rate was given.
    RateRequired,
    /// The sample rate is not a positive finite number, or out of the range the readers accept.
    InvalidRate(f64),
    /// A rate was given and the file states another one.
    RateMismatch { given_hz: f64, file_hz: f64 },
    /// The `t` column does not increase.
    TimeNotIncreasing { previous_s: f64, this_s: f64 },
    /// The `t` column is not uniformly spaced.
    TimeNotUniform { interval_s: f64, expected_s: f64 },
    /// The `t` column needs at least two rows to give a sample rate.
    TooFewRowsForRate,
    /// The file is not a WAV file the reader understands; holds the reason.
    Wav(String),
    /// The file ends inside a structure (a WAV header or data chunk).
    Truncated(String),
}

/// An error reading a waveform recording: a kind and a location.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    location: Location,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, location: Location) -> Self {
        Error { kind, location }
    }

    /// What was wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where it was found.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the error lies in the recording (bad input) rather than in reading it (I/O).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self.kind, ErrorKind::Io(_))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Io(e) => write!(f, "cannot read the file: {e}"),
            ErrorKind::Empty => write!(f, "the recording holds no samples"),
            ErrorKind::NotText => write!(
                f,
                "binary data where a CSV header should be: the file is neither a WAV file (no RIFF/WAVE header) nor CSV text"
            ),
            ErrorKind::UnknownColumn(name) => write!(
                f,
                "unknown column {name:?} (expected t, v, i or t, va, vb, vc, ia, ib, ic, in)"
            ),
            ErrorKind::DuplicateColumn(name) => write!(f, "column {name:?} appears twice"),
            ErrorKind::MissingColumns(names) => write!(f, "the header lacks column(s) {names}"),
            ErrorKind::MixedLayout => write!(
                f,
                "the header mixes single-phase (v, i) and three-phase (va, vb, vc, ia, ib, ic, in) columns"
            ),
            ErrorKind::RaggedRow { expected, found } => write!(
                f,
                "the row has {found} cells but the header has {expected} columns"
            ),
            ErrorKind::EmptyCell => write!(f, "the cell is empty"),
            ErrorKind::NotANumber(text) => write!(f, "{text:?} is not a number"),
            ErrorKind::NotFinite(text) => write!(f, "{text:?} is not a finite number"),
            ErrorKind::ScaledOverflow(text) => {
                write!(f, "{text:?} times the scale is not a finite number")
            }
            ErrorKind::LineTooLong { limit_bytes } => {
                write!(f, "the line is longer than {limit_bytes} bytes")
            }
            ErrorKind::RateRequired => write!(
                f,
                "the file has no t column, so the sample rate must be given with --rate HZ"
            ),
            ErrorKind::InvalidRate(hz) => write!(
                f,
                "sample rate {hz} Hz is not usable (it must lie between 100 Hz and 100 MHz)"
            ),
            ErrorKind::RateMismatch { given_hz, file_hz } => write!(
                f,
                "--rate {given_hz} Hz disagrees with the file's own rate of {file_hz} Hz"
            ),
            ErrorKind::TimeNotIncreasing { previous_s, this_s } => write!(
                f,
                "time goes from {previous_s} s to {this_s} s; t must increase from row to row"
            ),
            ErrorKind::TimeNotUniform {
                interval_s,
                expected_s,
            } => write!(
                f,
                "the time step is {interval_s:.6e} s where the file's rate gives {expected_s:.6e} s; \
                 samples must be uniformly spaced (if t is rounded, drop it and pass --rate)"
            ),
            ErrorKind::TooFewRowsForRate => write!(
                f,
                "a t column needs at least two rows to give the sample rate"
            ),
            ErrorKind::Wav(reason) => write!(f, "{reason}"),
            ErrorKind::Truncated(what) => write!(f, "the file ends inside {what}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::File => write!(f, "{}", self.kind),
            _ => write!(f, "{}: {}", self.location, self.kind),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}
