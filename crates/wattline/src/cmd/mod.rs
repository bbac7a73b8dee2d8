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

use std::path::PathBuf;
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

/// Which server's store an administration command (`wattline meter`, `wattline user`) works on:
/// the data directory of an SQLite server, or the server's config file (any store, including
/// PostgreSQL; the data directory is the config's).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreTarget {
    /// The server's data directory (SQLite store, PKI and master key).
    #[arg(long, value_name = "DIR", global = true, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// The server's config file: its `data_dir` and `[store]` (SQLite or PostgreSQL) are used.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl StoreTarget {
    /// The server configuration named (a bare `--data-dir` is an SQLite server's).
    pub fn server_config(&self) -> Result<::server::runtime::ServerConfig, Failure> {
        use ::server::runtime::{ServerConfig, StoreConfig};
        Ok(match (&self.config, &self.data_dir) {
            (Some(path), _) => ServerConfig::load(path).bad_input()?,
            (None, Some(dir)) => ServerConfig {
                data_dir: dir.clone(),
                store: StoreConfig::Sqlite,
                ..ServerConfig::default()
            },
            (None, None) => {
                return Err(anyhow::anyhow!(
                    "say which server: --data-dir DIR (SQLite) or --config server.toml"
                ))
                .bad_input();
            }
        })
    }

    /// The data directory and the opened store.
    pub async fn open(&self) -> Result<(PathBuf, ::server::Database), Failure> {
        let config = self.server_config()?;
        let db = open_store(&config).await?;
        Ok((config.data_dir, db))
    }
}

/// Opens the store of `config`.
pub async fn open_store(
    config: &::server::runtime::ServerConfig,
) -> Result<::server::Database, Failure> {
    Ok(::server::runtime::open_database(config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?)
}

/// The operator running an administration command, as the audit trail names them.
pub fn cli_actor() -> String {
    let who = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{who}")
}

/// Whether an error is a closed pipe on stdout (`wattline … | head`): not a failure.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}
