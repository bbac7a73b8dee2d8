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
    /// Tariffs, tariff assignments, bill runs, re-rating, payments and bill statements (PDF/CSV).
    #[command(after_help = cmd::bill::EXAMPLES)]
    Bill(cmd::bill::Args),
    /// The whole system in one process: server, web, broker and a simulated meter fleet over
    /// real MQTT/TLS (first run creates everything in --data-dir; later runs resume).
    #[command(after_help = cmd::demo::EXAMPLES)]
    Demo(cmd::demo::Args),
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
    /// Meters: enrol (client certificate, sealing key, agent config bundle), rotate the sealing
    /// key, renew the certificate, revoke, show.
    #[command(after_help = cmd::meter::EXAMPLES)]
    Meter(cmd::meter::Args),
    /// The certificate authority: create the CA, broker/server and HTTPS certificates and the
    /// server master key in a data directory.
    #[command(after_help = cmd::pki::EXAMPLES)]
    Pki(cmd::pki::Args),
    /// Consumption, solar import/export and power-quality reports (CSV/PDF), and the monthly run.
    #[command(after_help = cmd::report::EXAMPLES)]
    Report(cmd::report::Args),
    /// Run the server (store, MQTT broker or external broker, ingest, web/API, jobs) from a
    /// TOML configuration file until SIGINT/SIGTERM.
    #[command(after_help = cmd::server::EXAMPLES)]
    Server(cmd::server::Args),
    /// Score consumption histories for electricity theft, or train the scoring model from
    /// inspection results.
    #[command(after_help = cmd::theft::EXAMPLES)]
    Theft(cmd::theft::Args),
    /// Web and API accounts: add users (admin, operator, customer), passwords, roles, API tokens.
    #[command(after_help = cmd::user::EXAMPLES)]
    User(cmd::user::Args),
}

fn main() -> ExitCode {
    // Usage errors exit with 2 and `--help` with 0, both inside `parse` (DESIGN §3.1).
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Bill(args) => cmd::bill::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Dlms(args) => cmd::dlms::run(args),
        Command::Loadgen(args) => cmd::loadgen::run(args),
        Command::MakeTestdata(args) => cmd::make_testdata::run(args),
        Command::Meter(args) => cmd::meter::run(args),
        Command::Pki(args) => cmd::pki::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Theft(args) => cmd::theft::run(args),
        Command::User(args) => cmd::user::run(args),
    };
    cmd::exit_code(outcome)
}
