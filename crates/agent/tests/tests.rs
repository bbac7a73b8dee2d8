//! Integration tests of the agent's lossless core against a real TLS Mosquitto: `kill -9`
//! mid-stream, a broker outage, a full outbox, damaged files, commands, and routing through a
//! neighbouring meter.

mod support;

mod cosem;
mod lossless;
mod neighbour;
mod perf;
mod pzem;

use std::path::PathBuf;

use agent::config::AgentConfig;
use agent::pipeline::RunOptions;
use agent::sources::Source;

/// Entry point of the agent child processes the broker tests start (see `support::agent`);
/// does nothing when run as an ordinary test.
#[test]
#[ignore = "entry point of agent child processes, started by the broker tests"]
fn agent_child_process() {
    let Some(config_path) = std::env::var_os(support::agent::CONFIG_ENV) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = AgentConfig::load(&PathBuf::from(config_path)).expect("agent config");
    let source: Box<dyn Source> = config.source.build(None).expect("simulator source");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            let _ = tx.send(true);
        });
        agent::pipeline::run(config, source, RunOptions::default(), rx)
            .await
            .expect("agent run");
    });
}
