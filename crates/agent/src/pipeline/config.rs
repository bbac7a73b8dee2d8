//! Configuration of the measuring pipeline (the `[pipeline]` section of the agent config).

use serde::{Deserialize, Serialize};

/// Nominal supply frequency; sets the measurement window (10 cycles at 50 Hz, 12 at 60 Hz).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nominal {
    /// 50 Hz grids.
    #[serde(rename = "50")]
    Hz50,
    /// 60 Hz grids.
    #[serde(rename = "60")]
    Hz60,
}

/// The `[pipeline]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Length of a reporting interval, seconds, 1 to 900 (default 60). One `reading` record
    /// per interval; changeable at run time by a `reporting_interval` command.
    #[serde(default = "default_reporting_interval_s")]
    pub reporting_interval_s: u32,
    /// Save the energy registers at least this often, seconds (default 5): the most energy
    /// a power cut can lose. Every record also saves them.
    #[serde(default = "default_persist_every_s")]
    pub persist_every_s: u32,
    /// Send a `heartbeat` record this often, seconds (default 300).
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u32,
    /// Rewrite the status file this often, milliseconds (default 1000).
    #[serde(default = "default_status_every_ms")]
    pub status_every_ms: u64,
    /// Nominal frequency, `"50"` or `"60"` (default `"50"`).
    #[serde(default = "default_nominal")]
    pub nominal_hz: Nominal,
}

const fn default_reporting_interval_s() -> u32 {
    60
}
const fn default_persist_every_s() -> u32 {
    5
}
const fn default_heartbeat_s() -> u32 {
    300
}
const fn default_status_every_ms() -> u64 {
    1000
}
const fn default_nominal() -> Nominal {
    Nominal::Hz50
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            reporting_interval_s: default_reporting_interval_s(),
            persist_every_s: default_persist_every_s(),
            heartbeat_s: default_heartbeat_s(),
            status_every_ms: default_status_every_ms(),
            nominal_hz: default_nominal(),
        }
    }
}

impl PipelineConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(schema::MIN_REPORTING_INTERVAL_S..=schema::MAX_REPORTING_INTERVAL_S)
            .contains(&self.reporting_interval_s)
        {
            return Err(format!(
                "pipeline.reporting_interval_s must be {} to {}",
                schema::MIN_REPORTING_INTERVAL_S,
                schema::MAX_REPORTING_INTERVAL_S
            ));
        }
        if self.persist_every_s == 0 || self.heartbeat_s == 0 || self.status_every_ms == 0 {
            return Err(
                "pipeline.persist_every_s, heartbeat_s and status_every_ms must be positive".into(),
            );
        }
        Ok(())
    }
}
