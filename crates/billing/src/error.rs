//! The crate's one error type: what went wrong (`ErrorKind`) and where (a path into the tariff
//! file, a reading's time, a date).

use std::fmt;

/// An error from loading a tariff or rating consumption.
///
/// `Display` gives one lowercase sentence saying what was wrong and where, e.g.
/// `versions[0].energy.windows[2]: window 22:00-07:00 overlaps window 06:00-09:00 on mon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    location: String,
    message: String,
}

/// The class of an [`Error`]; match on it, read the message for the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The tariff file is not valid TOML or does not fit the tariff format.
    Syntax,
    /// The tariff parses but is not a valid tariff (overlaps, gaps, order, signs, zones).
    InvalidTariff,
    /// The consumption handed in cannot be rated (overlaps, outside the cycle, wrong resolution).
    InvalidReadings,
    /// A billing cycle, date or policy argument is not valid.
    InvalidArgument,
    /// No tariff version is in force for part of the period rated.
    NoTariffInForce,
    /// A decimal computation left the range of 96-bit decimals.
    Overflow,
}

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            location: location.into(),
            message: message.into(),
        }
    }

    pub(crate) fn tariff(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidTariff, location, message)
    }

    pub(crate) fn readings(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidReadings, location, message)
    }

    pub(crate) fn argument(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, location, message)
    }

    pub(crate) fn overflow(location: impl Into<String>) -> Self {
        Error::new(
            ErrorKind::Overflow,
            location,
            "amount out of the range of 96-bit decimals",
        )
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where it happened: a path into the tariff (`versions[1].energy.blocks[0]`), a reading, or a date.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What was wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;
