//! Integration tests of the `wattline` binary: the real executable on real files.
//!
//! Modules by subcommand; `util` runs the binary and makes scratch files.

mod admin;
mod analyze;
mod cli;
mod demo;
mod dlms_poll;
mod dlms_read;
mod fleet;
mod loadgen;
mod neighbour;
mod relay;
mod server_crash;
mod util;
