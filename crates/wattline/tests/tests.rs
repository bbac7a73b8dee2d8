//! Integration tests of the `wattline` binary: the real executable on real files.
//!
//! Modules by subcommand; `util` runs the binary and makes scratch files.

mod analyze;
mod cli;
mod demo;
mod dlms_read;
mod util;
