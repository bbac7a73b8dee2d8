//! The crate's error type: only malformed *files* (history CSV, label CSV, model files) and invalid
//! configurations are errors; odd values inside well-formed data become diagnostics instead.

use std::fmt;

/// Why an input could not be used at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
}

/// The kinds of [`Error`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A line of a CSV input is malformed. `line` and `column` are 1-based (the column is the
    /// field number, counted from 1).
    Csv {
        line: u64,
        column: u64,
        message: String,
    },
    /// A model file is malformed or does not fit this build's feature list.
    Model { line: u64, message: String },
    /// A configuration value is outside its valid range.
    Config { message: String },
    /// Training is impossible with the data given (for example, no theft label at all).
    Training { message: String },
}

impl Error {
    pub(crate) fn csv(line: u64, column: u64, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Csv {
                line,
                column,
                message: message.into(),
            },
        }
    }

    pub(crate) fn model(line: u64, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Model {
                line,
                message: message.into(),
            },
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Config {
                message: message.into(),
            },
        }
    }

    pub(crate) fn training(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Training {
                message: message.into(),
            },
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Csv {
                line,
                column,
                message,
            } => {
                write!(f, "line {line}, column {column}: {message}")
            }
            ErrorKind::Model { line, message } => write!(f, "model line {line}: {message}"),
            ErrorKind::Config { message } => write!(f, "invalid configuration: {message}"),
            ErrorKind::Training { message } => write!(f, "cannot train: {message}"),
        }
    }
}

impl std::error::Error for Error {}
