//! The crate's error type: what went wrong and where, never a panic.

use core::fmt;

/// An error from decoding, encoding, security or an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    /// The wire element being processed, e.g. `"a-xdr octet-string"`.
    context: &'static str,
}

/// What kind of error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ends early; `needed` more bytes would let decoding continue.
    Truncated { needed: usize },
    /// A tag or code that is not valid at this place.
    InvalidTag { tag: u8 },
    /// A length field that is impossible or above a limit.
    LengthOutOfRange { length: usize, max: usize },
    /// Nesting deeper than the decoder allows.
    DepthExceeded { max: usize },
    /// Bytes left over after a complete element.
    TrailingBytes { count: usize },
    /// A structurally invalid element.
    Malformed(&'static str),
    /// A frame check sequence or header check sequence mismatch.
    Checksum,
    /// Authentication (GMAC tag, password or challenge response) failed.
    AuthenticationFailed,
    /// An invocation counter at or below the last accepted one: a replay.
    Replay { received: u32, last_accepted: u32 },
    /// The invocation counter is exhausted; the key must be changed.
    CounterExhausted,
    /// A feature this implementation does not support.
    Unsupported(&'static str),
    /// The request is not valid in the current association state.
    State(&'static str),
    /// The peer answered with an error.
    Peer(&'static str, u8),
}

impl Error {
    pub(crate) const fn new(kind: ErrorKind, context: &'static str) -> Self {
        Error { kind, context }
    }

    pub(crate) const fn truncated(needed: usize, context: &'static str) -> Self {
        Error::new(ErrorKind::Truncated { needed }, context)
    }

    pub(crate) const fn tag(tag: u8, context: &'static str) -> Self {
        Error::new(ErrorKind::InvalidTag { tag }, context)
    }

    pub(crate) const fn malformed(what: &'static str, context: &'static str) -> Self {
        Error::new(ErrorKind::Malformed(what), context)
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Which wire element or operation the error is about.
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// For stream decoders: how many more bytes are needed, if that is the problem.
    pub fn needed(&self) -> Option<usize> {
        match self.kind {
            ErrorKind::Truncated { needed } => Some(needed),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Truncated { needed } => write!(f, "truncated, need {needed} more bytes"),
            ErrorKind::InvalidTag { tag } => write!(f, "invalid tag or code 0x{tag:02x}"),
            ErrorKind::LengthOutOfRange { length, max } => {
                write!(f, "length {length} out of range (max {max})")
            }
            ErrorKind::DepthExceeded { max } => write!(f, "nesting deeper than {max}"),
            ErrorKind::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
            ErrorKind::Malformed(what) => write!(f, "malformed: {what}"),
            ErrorKind::Checksum => write!(f, "check sequence mismatch"),
            ErrorKind::AuthenticationFailed => write!(f, "authentication failed"),
            ErrorKind::Replay {
                received,
                last_accepted,
            } => write!(
                f,
                "invocation counter {received} not above last accepted {last_accepted} (replay)"
            ),
            ErrorKind::CounterExhausted => {
                write!(f, "invocation counter exhausted, change the key")
            }
            ErrorKind::Unsupported(what) => write!(f, "unsupported: {what}"),
            ErrorKind::State(what) => write!(f, "invalid in this state: {what}"),
            ErrorKind::Peer(what, code) => write!(f, "peer reported {what} (code {code})"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.kind)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Shorthand used throughout the crate.
pub type Result<T> = core::result::Result<T, Error>;
