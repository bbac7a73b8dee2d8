//! The agent's configuration file (TOML): one section per component, each a struct whose doc
//! comments are the user documentation and whose unknown fields are errors.
//!
//! ```toml
//! meter = "house-7"
//! data_dir = "/var/lib/wattline/agent"
//!
//! [source]
//! type = "simulator"        # see `sources::SourceConfig`
//!
//! [pipeline]
//! reporting_interval_s = 60
//!
//! [outbox]
//! when_full = "drop_oldest_readings"
//!
//! [uplink]
//! host = "mqtt.example.net"
//! ca_file = "ca.pem"
//! cert_file = "house-7.pem"
//! key_file = "house-7.key"
//! meter_key_file = "house-7.sealkey"
//!
//! [relay]
//! control_mode = 1
//!
//! [neighbour]               # routing through neighbouring meters, see `neighbour`
//! listen = "0.0.0.0:7401"
//! via = [{ meter = "house-8", addr = "192.168.1.8:7401" }]
//! after_s = 30
//! ```

use std::path::{Path, PathBuf};

use schema::MeterId;
use serde::{Deserialize, Serialize};

use crate::control::{ControlMode, LimiterConfig};
use crate::cosem::CosemConfig;
use crate::events::TamperConfig;
use crate::neighbour::NeighbourConfig;
use crate::outbox::OutboxConfig;
use crate::pipeline::PipelineConfig;
use crate::sources::SourceConfig;
use crate::uplink::UplinkConfig;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The meter id: the common name of its certificate, `[a-z0-9][a-z0-9-]{0,62}`.
    pub meter: MeterId,
    /// Where registers, outbox, event log and status live. Relative paths in this file are
    /// relative to the file's directory.
    pub data_dir: PathBuf,
    /// Where measurements come from.
    pub source: SourceConfig,
    /// Reporting interval and persistence.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The disk queue.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The MQTT/TLS link.
    pub uplink: UplinkConfig,
    /// Relay (DLMS class 70) and limiter (class 71).
    #[serde(default)]
    pub relay: RelayConfig,
    /// Tamper and fault rules.
    #[serde(default = "default_events")]
    pub events: TamperConfig,
    /// The meter's DLMS/COSEM server (TCP wrapper); absent means none.
    #[serde(default)]
    pub cosem: Option<CosemConfig>,
    /// The neighbour link: forwarding for neighbours and routing through them when the own
    /// uplink is down; absent means neither.
    #[serde(default)]
    pub neighbour: Option<NeighbourConfig>,
}

/// The `[relay]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// DLMS class 70 control mode, 0 to 6 (default 1: remote and manual disconnection,
    /// remote reconnection via ready-for-reconnection, manual reconnection).
    #[serde(default = "default_control_mode")]
    pub control_mode: ControlMode,
    /// The limiter (class 71); absent means no overload cut-off until a command sets one.
    #[serde(default)]
    pub limiter: Option<LimiterConfig>,
}

fn default_control_mode() -> ControlMode {
    ControlMode::new(1).expect("1 is a valid mode")
}

fn default_events() -> TamperConfig {
    // Every field of TamperConfig has a serde default: an empty table is the default config.
    serde_json::from_str("{}").expect("tamper config has defaults for every field")
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            control_mode: default_control_mode(),
            limiter: None,
        }
    }
}

impl AgentConfig {
    /// Reads and validates `path`; errors name the file and, for syntax errors, the line.
    pub fn load(path: &Path) -> Result<AgentConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: AgentConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.uplink.ca_file);
        fix(&mut self.uplink.cert_file);
        fix(&mut self.uplink.key_file);
        fix(&mut self.uplink.meter_key_file);
    }

    /// Range checks of every section.
    pub fn validate(&self) -> Result<(), String> {
        self.pipeline.validate()?;
        self.uplink.validate()?;
        if let Some(cosem) = &self.cosem {
            cosem.validate()?;
        }
        if let Some(neighbour) = &self.neighbour {
            neighbour.validate(&self.meter)?;
        }
        if self.outbox.max_bytes < 4 * self.outbox.segment_bytes.max(1024) {
            return Err(
                "outbox.max_bytes must be at least 4 segments (and segments >= 1 KiB)".into(),
            );
        }
        Ok(())
    }

    /// The status file of this agent.
    pub fn status_path(&self) -> PathBuf {
        self.data_dir.join("status.json")
    }
}
