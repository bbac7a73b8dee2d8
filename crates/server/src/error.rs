//! The one error type of the `server` crate: what failed in the store or the ingest, and why.

use std::fmt;

/// An error from a [`Store`](crate::Store) or the ingest pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. New variants may be added in minor releases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database refused or failed a statement.
    Database {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What we were doing and what the database said.
        detail: String,
    },
    /// The database could not be reached or opened.
    Unavailable(String),
    /// A migration failed; the schema is left at the previous version.
    Migration {
        /// The migration's version number.
        version: u32,
        /// Why.
        detail: String,
    },
    /// A value handed to the store is not acceptable (unknown time zone, bad id, ...).
    InvalidInput(String),
    /// The named thing does not exist.
    NotFound(String),
    /// A command status change that its life cycle does not allow.
    InvalidTransition {
        /// The command.
        command_id: i64,
        /// Its current status.
        from: String,
        /// The status asked for.
        to: String,
    },
    /// The ingest pipeline has stopped and accepts no more deliveries.
    Closed,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    pub(crate) fn database(backend: &'static str, doing: &str, e: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Database {
            backend,
            detail: format!("{doing}: {e}"),
        })
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput(what.into()))
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Database { backend, detail } => write!(f, "{backend} error while {detail}"),
            ErrorKind::Unavailable(why) => write!(f, "database unavailable: {why}"),
            ErrorKind::Migration { version, detail } => {
                write!(f, "migration {version} failed: {detail}")
            }
            ErrorKind::InvalidInput(what) => write!(f, "invalid input: {what}"),
            ErrorKind::NotFound(what) => write!(f, "not found: {what}"),
            ErrorKind::InvalidTransition {
                command_id,
                from,
                to,
            } => write!(f, "command {command_id} cannot go from {from} to {to}"),
            ErrorKind::Closed => write!(f, "ingest pipeline is closed"),
        }
    }
}

impl std::error::Error for Error {}
