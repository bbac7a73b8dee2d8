//! The subcommands, one module each, and how their failures become exit codes.

pub mod agent;
pub mod analyze;
pub mod bill;
pub mod demo;
pub mod dlms;
pub mod loadgen;
pub mod make_testdata;
pub mod meter;
pub mod pki;
pub mod report;
pub mod server;
pub mod theft;
pub mod user;

use std::process::ExitCode;

/// Why a subcommand failed; it decides the exit code (DESIGN §3.1).
#[derive(Debug)]
pub enum Failure {
    /// The user's input or arguments are wrong (exit code 2).
    BadInput(anyhow::Error),
    /// Something failed at run time: I/O, a service, a bug (exit code 1).
    Runtime(anyhow::Error),
}

/// What a subcommand returns.
pub type Outcome = Result<(), Failure>;

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Marks an error as the user's input being wrong.
pub trait BadInput<T> {
    fn bad_input(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> BadInput<T> for Result<T, E> {
    fn bad_input(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::BadInput(e.into()))
    }
}

/// Prints a failure as one line on stderr (the causes joined with ": ", no backtrace) and maps
/// it to the exit code.
pub fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether an error is a closed pipe on stdout (`wattline … | head`): not a failure.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}
