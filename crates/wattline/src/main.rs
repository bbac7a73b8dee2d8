//! `wattline`: the one user-facing binary, a thin clap dispatcher over `cmd/<subcommand>.rs`.
//!
//! Adding a subcommand: write `cmd/<name>.rs` with an `Args` struct (clap `Args`, its doc comment
//! and an `after_help` example are the user documentation) and `pub fn run(&Args) -> Outcome`,
//! then add one variant to [`Command`] and one arm to the `match` in `main`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wattline: secure smart metering — metrology, meter agent, server and offline tools.
#[derive(Debug, Parser)]
#[command(name = "wattline", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the meter agent (measure, keep registers and outbox, send over MQTT/TLS), or show
    /// the status of a running one.
    #[command(after_help = cmd::agent::EXAMPLES)]
    Agent(cmd::agent::Args),
    /// Measure a recorded voltage/current waveform (CSV or WAV): RMS, power, PF, harmonics,
    /// energy, per IEC 61000-4-30 window.
    #[command(after_help = cmd::analyze::EXAMPLES)]
    Analyze(cmd::analyze::Args),
    /// Read a DLMS/COSEM meter over TCP (wrapper or HDLC): clock, registers with units,
    /// load profiles and the object list.
    #[command(after_help = cmd::dlms::EXAMPLES)]
    Dlms(cmd::dlms::Args),
    /// Simulated meters at a set rate over MQTT/TLS through the broker into ingest: latency,
    /// throughput, and that every reading is stored once.
    #[command(after_help = cmd::loadgen::EXAMPLES)]
    Loadgen(cmd::loadgen::Args),
    /// Regenerate the bundled example recordings in testdata/ (developer tool).
    #[command(
        hide = true,
        after_help = "Example:\n  wattline make-testdata --out testdata"
    )]
    MakeTestdata(cmd::make_testdata::Args),
    /// Score consumption histories for electricity theft, or train the scoring model from
    /// inspection results.
    #[command(after_help = cmd::theft::EXAMPLES)]
    Theft(cmd::theft::Args),
}

fn main() -> ExitCode {
    // Usage errors exit with 2 and `--help` with 0, both inside `parse` (DESIGN §3.1).
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Dlms(args) => cmd::dlms::run(args),
        Command::Loadgen(args) => cmd::loadgen::run(args),
        Command::MakeTestdata(args) => cmd::make_testdata::run(args),
        Command::Theft(args) => cmd::theft::run(args),
    };
    cmd::exit_code(outcome)
}
