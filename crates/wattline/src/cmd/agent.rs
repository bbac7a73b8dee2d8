//! `wattline agent`: runs the meter agent on a config file, or shows a running agent's status
//! (live quantities, relay, uplink, outbox). The work is in the `agent` crate.

use std::path::PathBuf;

use agent::config::AgentConfig;
use agent::pipeline::{RunOptions, unix_now_ms};
use agent::status::StatusSnapshot;
use anyhow::anyhow;

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline agent --config /etc/wattline/agent.toml
  wattline agent status --config /etc/wattline/agent.toml
  wattline agent status --config agent.toml --json

The agent measures (source -> metrology -> reporting interval), keeps its energy registers
and an outbox on disk under data_dir, and sends sealed batches over MQTT with mutual TLS.
Ctrl-C or SIGTERM stops it cleanly. Logs go to stderr (RUST_LOG=debug for more).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.";

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The agent configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start from zero counters under a new boot id (after a meter exchange, or when both
    /// register copies are damaged). Never happens without this flag.
    #[arg(long)]
    pub reset_registers: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Show the live status of the agent running with this config.
    #[command(after_help = EXAMPLES)]
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The agent configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Print the raw status as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Some(Action::Status(s)) => status(s),
        None => {
            let path = args
                .config
                .as_ref()
                .ok_or_else(|| Failure::BadInput(anyhow!("--config FILE is required")))?;
            run_agent(path, args.reset_registers)
        }
    }
}

fn status(args: &StatusArgs) -> Outcome {
    let config = AgentConfig::load(&args.config).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let snapshot = StatusSnapshot::read(&config.status_path()).map_err(|e| anyhow!(e))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", snapshot.render(unix_now_ms()));
    }
    Ok(())
}

fn run_agent(path: &std::path::Path, reset_registers: bool) -> Outcome {
    let config = AgentConfig::load(path).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let source = config.source.build(None).bad_input()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stopping");
            let _ = stop.send(true);
        });
        agent::pipeline::run(config, source, RunOptions { reset_registers }, stopped)
            .await
            .map_err(|e| Failure::Runtime(anyhow!(e)))
    })
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
