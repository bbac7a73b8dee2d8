//! Tamper and fault events: detection rules, debouncing, and the persisted event log.
//!
//! - [`TamperDetector`] turns inputs into [`MeterEvent`]s: discrete signals (cover switch,
//!   magnetic sensor — from GPIO lines or the simulator), electrical snapshots (one per metrology
//!   window or device reading: reverse energy, current without voltage, phase/neutral current
//!   mismatch, power loss) and clock observations (jumps of the wall clock against the monotonic
//!   clock). Conditions are debounced: raised only after holding for `raise_after_ms`, cleared
//!   only after being absent for `clear_after_ms`, so a bouncing switch or a single odd window
//!   does not flood the uplink.
//! - [`EventLog`] keeps every event in an append-only, checksummed file before it is sent, so an
//!   alarm survives a crash or power loss; [`EventLog::open`] reports damaged records instead of
//!   silently dropping them.
//!
//! The pipeline sends each [`MeterEvent`] as an `event` record.

mod detector;
mod gpio;
mod log;
mod residual;

pub use detector::{Debounce, ElectricalSnapshot, PhaseSnapshot, TamperConfig, TamperDetector};
#[cfg(feature = "gpio")]
pub use gpio::GpioInputs;
pub use gpio::{GpioConfig, GpioInputConfig, GpioMap};
pub use log::{Damage, EventLog, EventLogConfig, LoggedEvent, Recovery};
pub use residual::ResidualCurrent;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::control::ControlEvent;

/// A debounced condition that is either present or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Condition {
    /// The meter or terminal cover is open (cover switch / optical sensor).
    CoverOpen,
    /// A strong magnetic field is present (Hall-effect sensor): an attempt to saturate the
    /// current transformer or stop an electromechanical element.
    MagneticField,
    /// The measured neutral current differs from the sum of the phase currents: some current
    /// returns around the meter (CT bypass, neutral fraud).
    CurrentMismatch,
    /// Active energy flows out (export) on a meter not allowed to export: reversed CT or
    /// reversed meter connection.
    ReverseEnergy,
    /// Current flows on a phase whose voltage is missing: the voltage link was cut to stop
    /// the meter from measuring.
    CurrentWithoutVoltage {
        /// Phase index, 0 = a.
        phase: u8,
    },
    /// Every phase voltage is below the power-loss level: supply outage.
    PowerLoss,
}

impl Condition {
    /// True for the conditions that indicate tampering rather than a supply fault.
    pub fn is_tamper(self) -> bool {
        !matches!(self, Condition::PowerLoss)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::CoverOpen => f.write_str("cover open"),
            Condition::MagneticField => f.write_str("strong magnetic field"),
            Condition::CurrentMismatch => f.write_str("phase/neutral current mismatch"),
            Condition::ReverseEnergy => f.write_str("reverse energy"),
            Condition::CurrentWithoutVoltage { phase } => {
                write!(f, "current without voltage on phase {}", phase_name(*phase))
            }
            Condition::PowerLoss => f.write_str("power loss"),
        }
    }
}

pub(crate) fn phase_name(phase: u8) -> char {
    match phase {
        0 => 'a',
        1 => 'b',
        2 => 'c',
        _ => '?',
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A condition started (after its debounce time).
    Raised {
        /// The condition.
        #[serde(flatten)]
        condition: Condition,
        /// The measured value that raised it, in the condition's natural unit (A for a
        /// mismatch or a current without voltage, W for reverse energy, V for power loss),
        /// when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
    },
    /// A condition ended (after its debounce time).
    Cleared {
        /// The condition.
        #[serde(flatten)]
        condition: Condition,
    },
    /// The wall clock moved by `delta_ms` more (or less, negative) than the monotonic clock:
    /// someone set the clock, or NTP stepped it.
    ClockJump {
        /// Wall-clock step in milliseconds beyond the elapsed monotonic time.
        delta_ms: i64,
    },
    /// The agent started again after being down; `down_for_ms` is the time since the last
    /// event it logged before, when known (a power loss of the meter itself).
    Restarted {
        /// Time since the last logged event, if any.
        down_for_ms: Option<u64>,
    },
    /// The relay or the limiter did something (see [`ControlEvent`]).
    Control {
        /// The control event.
        event: ControlEvent,
    },
}

/// An event as the meter records and sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeterEvent {
    /// Wall-clock time of the event, Unix milliseconds (UTC).
    pub at_unix_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl fmt::Display for MeterEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EventKind::Raised {
                condition,
                value: Some(v),
            } => write!(f, "{condition} ({v:.3})"),
            EventKind::Raised {
                condition,
                value: None,
            } => write!(f, "{condition}"),
            EventKind::Cleared { condition } => write!(f, "{condition} cleared"),
            EventKind::ClockJump { delta_ms } => write!(f, "clock jumped by {delta_ms} ms"),
            EventKind::Restarted {
                down_for_ms: Some(ms),
            } => {
                write!(f, "restarted after {} s down", ms / 1000)
            }
            EventKind::Restarted { down_for_ms: None } => f.write_str("started"),
            EventKind::Control { event } => write!(f, "{event:?}"),
        }
    }
}

/// What went wrong with the event log.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// The kinds of [`Error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O error on the log file, with what was being done.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// An event could not be encoded (should not happen for our own types).
    Encode(String),
    /// A configuration value is invalid.
    Config(String),
}

impl Error {
    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
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
            ErrorKind::Io { context, source } => write!(f, "{context}: {source}"),
            ErrorKind::Encode(m) => write!(f, "cannot encode event: {m}"),
            ErrorKind::Config(m) => write!(f, "invalid event config: {m}"),
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

#[cfg(test)]
mod tests;
