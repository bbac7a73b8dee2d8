//! The one error type of the `schema` crate: what was wrong with a piece of wire data, and where.

use std::fmt;

/// An error decoding, validating, sealing or opening wire data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. New variants may be added in minor releases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Input longer than the limit for its kind, rejected before decoding.
    TooLarge {
        /// What was too large (`envelope`, `header`, `batch`, ...).
        what: &'static str,
        /// Its length in bytes or items.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not the structure they claim to be.
    Malformed {
        /// Which structure (and which field or item) failed.
        what: String,
        /// Why.
        reason: String,
    },
    /// A meter id outside `[a-z0-9][a-z0-9-]{0,62}`.
    InvalidMeterId(String),
    /// Envelope format version this build does not understand.
    UnsupportedVersion(u64),
    /// AEAD algorithm this build does not implement.
    UnsupportedAlgorithm(String),
    /// The envelope names a different meter than the one it came from (or the key belongs to).
    WrongMeter {
        /// The meter the caller expected.
        expected: String,
        /// The meter the header names.
        found: String,
    },
    /// The envelope was sealed for the other direction (an uplink envelope sent down, or vice versa).
    WrongDirection,
    /// The authentication tag did not verify: wrong key, or header/ciphertext modified.
    TagMismatch,
    /// A key that is not 256 bits of hex.
    InvalidKey(String),
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        })
    }

    pub(crate) fn too_large(what: &'static str, len: usize, max: usize) -> Self {
        Self::new(ErrorKind::TooLarge { what, len, max })
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::TooLarge { what, len, max } => {
                write!(f, "{what} too large: {len} (limit {max})")
            }
            ErrorKind::Malformed { what, reason } => write!(f, "malformed {what}: {reason}"),
            ErrorKind::InvalidMeterId(id) => write!(
                f,
                "invalid meter id {id:?}: expected [a-z0-9][a-z0-9-]{{0,62}}"
            ),
            ErrorKind::UnsupportedVersion(v) => write!(f, "unsupported envelope version {v}"),
            ErrorKind::UnsupportedAlgorithm(a) => write!(f, "unsupported aead algorithm {a:?}"),
            ErrorKind::WrongMeter { expected, found } => write!(
                f,
                "envelope names meter {found:?} but came from meter {expected:?}"
            ),
            ErrorKind::WrongDirection => write!(f, "envelope sealed for the other direction"),
            ErrorKind::TagMismatch => write!(
                f,
                "authentication failed: wrong key or modified header or ciphertext"
            ),
            ErrorKind::InvalidKey(why) => write!(f, "invalid meter key: {why}"),
        }
    }
}

impl std::error::Error for Error {}
