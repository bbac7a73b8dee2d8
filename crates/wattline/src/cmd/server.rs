//! `wattline server --config FILE`: the production server process (store, broker or external
//! broker source, ingest, web/API, periodic jobs) until SIGINT/SIGTERM, then a clean stop.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use server::runtime::{Server, ServerConfig};

use super::{BadInput, Failure, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  wattline pki init --data-dir /var/lib/wattline --hosts meters.example.net
  wattline server --config /etc/wattline/server.toml

The configuration file is TOML; examples/server.toml documents every key. A wrong key or value
is reported with the file and the key, exit code 2. SIGINT/SIGTERM stop the server cleanly:
the broker stops taking messages, ingest commits what it holds (meters get their PUBACK only
after the commit, so nothing is lost), then the web server finishes its requests.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: &Args) -> Outcome {
    let config = ServerConfig::load(&args.config).bad_input()?;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let handle = Server::start(&config)
            .await
            .map_err(|e| Failure::Runtime(anyhow!("{}: {e}", args.config.display())))?;
        eprintln!(
            "wattline server: web/API on {} ({}), MQTT {}",
            handle.http_addr(),
            handle.state().config.public_url,
            handle
                .mqtt_addr()
                .map_or_else(|| "from the external broker".to_owned(), |a| a.to_string())
        );
        wait_for_signal().await?;
        eprintln!("stopping…");
        handle.shutdown().await;
        Ok::<(), Failure>(())
    })
}

/// Logs to stderr, `RUST_LOG` or `info` by default.
pub fn init_logging() {
    init_logging_with("info");
}

/// Logs to stderr with `RUST_LOG`, or `default` when it is not set.
pub fn init_logging_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
