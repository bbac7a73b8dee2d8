//! The `[dlms]` section of the server configuration: the commercial (or wattline) DLMS/COSEM
//! meters the server polls as a head-end.
//!
//! ```toml
//! [[dlms.meters]]
//! meter = "substation-4"              # a registered meter id (wattline meter enroll / POST /meters)
//! address = "10.0.7.21:4059"          # HOST:PORT
//! transport = "wrapper"               # or "hdlc" (HDLC over TCP, e.g. a serial-to-TCP converter)
//! association = "lls"                 # public | lls | hls (HLS-GMAC + suite 0)
//! password_file = "secrets/substation-4.lls"   # lls: first line is the password (mode 0600)
//! # key_file = "secrets/substation-4.keys"     # hls: block_key, auth_key, system_title lines (0600)
//! poll_every_s = 900
//! clock_deviation = "utc_minus_local" # or "local_minus_utc" (many deployed meters)
//! server_logical_device = 1
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::session::{Association, Transport};

/// `[dlms]`: the meters to poll. Absent: no polling.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlmsSection {
    /// One `[[dlms.meters]]` table per meter.
    #[serde(default)]
    pub meters: Vec<DlmsMeterConfig>,
}

/// The association the poller opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssociationSetting {
    /// Client SAP 16, no security: only what the meter makes public (often just the clock).
    Public,
    /// Client SAP 17 with an LLS password (`password_file`).
    #[default]
    Lls,
    /// Client SAP 1 with HLS-GMAC and security suite 0 (`key_file`).
    Hls,
}

impl AssociationSetting {
    /// The session's association.
    pub fn association(self) -> Association {
        match self {
            AssociationSetting::Public => Association::Public,
            AssociationSetting::Lls => Association::Reader,
            AssociationSetting::Hls => Association::Management,
        }
    }
}

/// How the meter is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportSetting {
    /// The TCP wrapper (IEC 62056-47).
    #[default]
    Wrapper,
    /// HDLC (IEC 62056-46) over TCP.
    Hdlc,
}

/// How the meter signs the date-time deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviationSetting {
    /// The Blue Book: deviation = UTC − local, in minutes.
    #[default]
    UtcMinusLocal,
    /// Local − UTC, as many deployed meters send it.
    LocalMinusUtc,
}

/// One `[[dlms.meters]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlmsMeterConfig {
    /// The meter id its readings are stored under; it must be registered in the store.
    pub meter: String,
    /// `HOST:PORT` of the meter (4059 is the wrapper's usual port).
    pub address: String,
    /// `wrapper` (default) or `hdlc`.
    #[serde(default)]
    pub transport: TransportSetting,
    /// HDLC lower (physical) server address (default 17), with `transport = "hdlc"`.
    #[serde(default = "default_physical_address")]
    pub physical_address: u8,
    /// `public`, `lls` (default) or `hls`.
    #[serde(default)]
    pub association: AssociationSetting,
    /// LLS: a file whose first line is the password (mode 0600).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// HLS: a file with `block_key`, `auth_key` and `system_title` lines (mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Seconds between polls (default 900, the usual load-profile capture period).
    #[serde(default = "default_poll_every_s")]
    pub poll_every_s: u64,
    /// Longest wait between retries after failed polls, seconds (default 300; the first
    /// retry comes after 5 s and the wait doubles).
    #[serde(default = "default_retry_max_s")]
    pub retry_max_s: u64,
    /// Seconds to wait for connecting and for each answer (default 10).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// `utc_minus_local` (default, the Blue Book) or `local_minus_utc`.
    #[serde(default)]
    pub clock_deviation: DeviationSetting,
    /// Server logical device address (default 1).
    #[serde(default = "default_logical_device")]
    pub server_logical_device: u16,
    /// Hours of load profile read at the very first poll (default 24).
    #[serde(default = "default_backfill_h")]
    pub backfill_h: u32,
}

const fn default_physical_address() -> u8 {
    17
}
const fn default_poll_every_s() -> u64 {
    900
}
const fn default_retry_max_s() -> u64 {
    300
}
const fn default_timeout_s() -> u64 {
    10
}
const fn default_logical_device() -> u16 {
    1
}
const fn default_backfill_h() -> u32 {
    24
}

impl DlmsMeterConfig {
    /// A wrapper/LLS entry with the defaults.
    pub fn new(meter: &str, address: &str) -> Self {
        Self {
            meter: meter.to_owned(),
            address: address.to_owned(),
            transport: TransportSetting::Wrapper,
            physical_address: default_physical_address(),
            association: AssociationSetting::Lls,
            password_file: None,
            key_file: None,
            poll_every_s: default_poll_every_s(),
            retry_max_s: default_retry_max_s(),
            timeout_s: default_timeout_s(),
            clock_deviation: DeviationSetting::UtcMinusLocal,
            server_logical_device: default_logical_device(),
            backfill_h: default_backfill_h(),
        }
    }

    /// The session transport.
    pub fn transport(&self) -> Transport {
        match self.transport {
            TransportSetting::Wrapper => Transport::Wrapper,
            TransportSetting::Hdlc => Transport::Hdlc {
                physical_address: self.physical_address,
            },
        }
    }

    /// The poll period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.poll_every_s)
    }
}

impl DlmsSection {
    /// Makes relative credential paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, fix_opt: impl Fn(&mut Option<PathBuf>)) {
        for m in &mut self.meters {
            fix_opt(&mut m.password_file);
            fix_opt(&mut m.key_file);
        }
    }

    /// Range and consistency checks; the message names the key (`[dlms] meters[N].key`).
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.meters.iter().enumerate() {
            let key = |k: &str| format!("[dlms] meters[{i}].{k}");
            if let Err(e) = schema::MeterId::parse(&m.meter) {
                return Err(format!(
                    "{}: {:?} is not a meter id: {e}",
                    key("meter"),
                    m.meter
                ));
            }
            if !seen.insert(m.meter.as_str()) {
                return Err(format!(
                    "{}: meter {:?} is listed twice",
                    key("meter"),
                    m.meter
                ));
            }
            let port_ok = m
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!(
                    "{}: {:?} is not HOST:PORT (e.g. 10.0.7.21:4059)",
                    key("address"),
                    m.address
                ));
            }
            match m.association {
                AssociationSetting::Lls if m.password_file.is_none() => {
                    return Err(format!(
                        "{}: required with association = \"lls\"",
                        key("password_file")
                    ));
                }
                AssociationSetting::Hls if m.key_file.is_none() => {
                    return Err(format!(
                        "{}: required with association = \"hls\"",
                        key("key_file")
                    ));
                }
                _ => {}
            }
            if !(1..=86_400 * 7).contains(&m.poll_every_s) {
                return Err(format!(
                    "{}: must be 1 to 604800 seconds, got {}",
                    key("poll_every_s"),
                    m.poll_every_s
                ));
            }
            if !(1..=3_600).contains(&m.timeout_s) {
                return Err(format!(
                    "{}: must be 1 to 3600 seconds, got {}",
                    key("timeout_s"),
                    m.timeout_s
                ));
            }
            if m.retry_max_s == 0 {
                return Err(format!("{}: must be at least 1", key("retry_max_s")));
            }
            if m.backfill_h > 24 * 400 {
                return Err(format!(
                    "{}: at most 9600 hours (the raw retention), got {}",
                    key("backfill_h"),
                    m.backfill_h
                ));
            }
            if m.transport == TransportSetting::Hdlc && m.server_logical_device > 127 {
                return Err(format!(
                    "{}: at most 127 over hdlc, got {}",
                    key("server_logical_device"),
                    m.server_logical_device
                ));
            }
        }
        Ok(())
    }
}

/// Reads `[dlms]` through serde_path_to_error, so a bad value names its key
/// (`[dlms] meters[0].association: unknown variant ...`).
pub(crate) fn deserialize_section<'de, D>(d: D) -> Result<DlmsSection, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let table = toml::Table::deserialize(d)?;
    serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| D::Error::custom(format!("[dlms] {}: {}", e.path(), e.inner())))
}
