//! Agent processes for the tests: the test binary re-executes itself with
//! `WATTLINE_TEST_AGENT_CONFIG` set, and its `agent_child_process` entry runs the real agent
//! pipeline on that config until SIGTERM — or until the test kills it with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use agent::status::StatusSnapshot;
use schema::{MeterId, MeterKey};

use super::pki::Pki;

pub const CONFIG_ENV: &str = "WATTLINE_TEST_AGENT_CONFIG";

/// A meter's files: config, keys, data directory.
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub meter: MeterId,
    pub key: MeterKey,
}

/// A simulated single-phase 2 kW resistive load, sampled at 4 kHz.
pub const SCENARIO: &str = "sample_rate_hz = 4000\n\n[[load]]\nname = \"heater\"\nkind = { type = \"resistive\", power_w = 2000 }\n";

/// Writes the config of `meter` in `dir`; `extra` is appended TOML (sections that override
/// nothing already written, e.g. `[outbox]`).
pub fn setup(dir: &Path, pki: &Pki, port: u16, meter: &str, pace: &str, extra: &str) -> Setup {
    let meter_id = MeterId::parse(meter).unwrap();
    let id = pki.client(meter);
    let key = MeterKey::generate();
    let key_file = dir.join(format!("{meter}.sealkey"));
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let data_dir = dir.join(format!("{meter}-data"));
    let config = dir.join(format!("{meter}.toml"));
    std::fs::write(
        &config,
        format!(
            "meter = \"{meter}\"\n\
             data_dir = \"{data}\"\n\
             [source]\n\
             type = \"simulator\"\n\
             scenario = \"{scenario}\"\n\
             pace = \"{pace}\"\n\
             chunk_ms = 200\n\
             [pipeline]\n\
             reporting_interval_s = 1\n\
             persist_every_s = 1\n\
             status_every_ms = 200\n\
             [uplink]\n\
             host = \"127.0.0.1\"\n\
             port = {port}\n\
             ca_file = \"{ca}\"\n\
             cert_file = \"{cert}\"\n\
             key_file = \"{keyfile}\"\n\
             meter_key_file = \"{sealkey}\"\n\
             backoff_min_ms = 200\n\
             backoff_max_ms = 2000\n\
             max_envelopes_per_s = 50\n\
             {extra}",
            data = data_dir.display(),
            scenario = scenario.display(),
            ca = pki.ca_file.display(),
            cert = id.cert.display(),
            keyfile = id.key.display(),
            sealkey = key_file.display(),
        ),
    )
    .unwrap();
    Setup {
        config,
        data_dir,
        meter: meter_id,
        key,
    }
}

/// A running agent process.
pub struct AgentProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn spawn(setup: &Setup) -> AgentProcess {
        let log = setup.config.with_extension("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "agent_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CONFIG_ENV, &setup.config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("re-execute the test binary as an agent");
        AgentProcess {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL: no chance to flush, save or say goodbye.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "agent exited with {status}: {}",
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The agent's status file, when it has written one.
pub fn status(setup: &Setup) -> Option<StatusSnapshot> {
    StatusSnapshot::read(&setup.data_dir.join("status.json")).ok()
}
