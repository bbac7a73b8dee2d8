//! The crate's error type: what was wrong with a configuration, an input chunk or a calibration.

use core::fmt;

/// An error from the metrology crate. Match on [`Error::kind`] for the reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Error {
    kind: ErrorKind,
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is out of its valid range; `field` names it.
    InvalidConfig {
        /// The offending field, e.g. `"sample_rate_hz"`.
        field: &'static str,
        /// What the value must be.
        expected: &'static str,
    },
    /// An interleaved chunk is not a whole number of frames.
    PartialFrame {
        /// Number of values in the chunk.
        len: usize,
        /// Channels per frame of the configured layout.
        channels: usize,
    },
    /// The voltage and current slices of a single-phase chunk differ in length.
    ChannelLengthMismatch {
        /// Length of the voltage slice.
        v_len: usize,
        /// Length of the current slice.
        i_len: usize,
    },
    /// A sample is NaN or infinite. `frame` counts frames from the start of the stream.
    NonFiniteSample {
        /// Index of the frame since the start of the stream.
        frame: u64,
        /// Channel name (`"v"`, `"i"`, `"va"`, ..., `"in"`).
        channel: &'static str,
    },
    /// A push method was called that does not match the configured layout.
    WrongLayout {
        /// What the call needs.
        expected: &'static str,
    },
    /// A calibration reading cannot be used; `reason` says why.
    InvalidCalibrationReading {
        /// Why the reading was rejected.
        reason: &'static str,
    },
    /// `push` or `finish` was called after `finish`.
    Finished,
}

impl Error {
    pub(crate) const fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    pub(crate) const fn config(field: &'static str, expected: &'static str) -> Self {
        Self::new(ErrorKind::InvalidConfig { field, expected })
    }

    /// The reason for the error.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::InvalidConfig { field, expected } => {
                write!(f, "invalid configuration: `{field}` must be {expected}")
            }
            ErrorKind::PartialFrame { len, channels } => write!(
                f,
                "chunk of {len} values is not a whole number of {channels}-channel frames"
            ),
            ErrorKind::ChannelLengthMismatch { v_len, i_len } => write!(
                f,
                "voltage and current chunks differ in length ({v_len} and {i_len} samples)"
            ),
            ErrorKind::NonFiniteSample { frame, channel } => write!(
                f,
                "sample {frame} of channel `{channel}` is not a finite number"
            ),
            ErrorKind::WrongLayout { expected } => {
                write!(f, "this call needs {expected}")
            }
            ErrorKind::InvalidCalibrationReading { reason } => {
                write!(f, "unusable calibration reading: {reason}")
            }
            ErrorKind::Finished => write!(f, "the analyzer was already finished"),
        }
    }
}

impl core::error::Error for Error {}
