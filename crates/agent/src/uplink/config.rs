//! Configuration of the MQTT uplink (the `[uplink]` section of the agent config).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[uplink]` section: where the broker is, the meter's TLS identity and sealing key, and
/// how fast to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Broker host name or IP address; it must match the broker certificate.
    pub host: String,
    /// Broker TLS port (default 8883).
    #[serde(default = "default_port")]
    pub port: u16,
    /// PEM file with the CA certificate(s) that signed the broker certificate.
    pub ca_file: PathBuf,
    /// PEM file with this meter's client certificate (common name = meter id), chain first.
    pub cert_file: PathBuf,
    /// PEM file with the private key of `cert_file`.
    pub key_file: PathBuf,
    /// File holding the meter's 256-bit sealing key as 64 hex digits.
    pub meter_key_file: PathBuf,
    /// MQTT keep-alive, seconds (default 30).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// First reconnect delay, milliseconds (default 500); doubles per failure, with jitter.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, milliseconds (default 60 000).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Envelopes published and not yet acknowledged at most (default 8).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Records per envelope at most (default 64).
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Envelopes per second at most: bounds the backfill rate after an outage (default 10).
    #[serde(default = "default_max_envelopes_per_s")]
    pub max_envelopes_per_s: f64,
    /// A publish not acknowledged after this many seconds drops the connection (default 30).
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
}

const fn default_port() -> u16 {
    8883
}
const fn default_keep_alive_s() -> u64 {
    30
}
const fn default_backoff_min_ms() -> u64 {
    500
}
const fn default_backoff_max_ms() -> u64 {
    60_000
}
const fn default_max_inflight() -> u16 {
    8
}
const fn default_batch_max_records() -> usize {
    64
}
const fn default_max_envelopes_per_s() -> f64 {
    10.0
}
const fn default_ack_timeout_s() -> u64 {
    30
}

impl UplinkConfig {
    /// Checks ranges a TOML file can get wrong; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_alive_s < 5 {
            return Err("uplink.keep_alive_s must be at least 5".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err("uplink.backoff_min_ms must be > 0 and <= backoff_max_ms".into());
        }
        if !(1..=64).contains(&self.max_inflight) {
            return Err("uplink.max_inflight must be 1 to 64".into());
        }
        if !(1..=schema::MAX_RECORDS_PER_BATCH).contains(&self.batch_max_records) {
            return Err(format!(
                "uplink.batch_max_records must be 1 to {}",
                schema::MAX_RECORDS_PER_BATCH
            ));
        }
        if !(self.max_envelopes_per_s.is_finite() && self.max_envelopes_per_s > 0.0) {
            return Err("uplink.max_envelopes_per_s must be a positive number".into());
        }
        if self.ack_timeout_s == 0 {
            return Err("uplink.ack_timeout_s must be positive".into());
        }
        Ok(())
    }
}
