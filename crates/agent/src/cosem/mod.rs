//! The meter's COSEM server (DLMS/COSEM, IEC 62056): the agent's live registers, last
//! metrology window, load profile, event logs, relay and limiter as COSEM objects, served over
//! the TCP wrapper (IEC 62056-47) so any DLMS head-end or tool can read the meter.
//!
//! Associations follow the wattline convention (issue 8, `dlms::ServerConfig::wattline`):
//! client SAP 16 public (no security, read-only: clock, logical device name, invocation
//! counter), 17 reader (LLS password), 1 management (HLS-GMAC + suite 0 authenticated
//! encryption; the only one that may write the limiter or invoke disconnect control).
//!
//! Data flow: the pipeline publishes what it measured into [`CosemShared`] after each window
//! and relay change; the load profile task captures the registers at every capture period and
//! appends each row to a file; relay and limiter changes requested over COSEM go back to the
//! pipeline as [`CosemRequest`]s, so they take exactly the path a `down` command takes (same
//! state machine, same persisted relay state, same events).

mod counters;
mod listener;
mod objects;
mod profile;

pub use counters::FileCounterStore;
pub use listener::{CosemServer, start};
pub use objects::{AgentObjects, obis};
pub use profile::{LoadProfileStore, ProfileRow};

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dlms::{Keys, ServerConfig, SystemTitle};
use schema::EnergyCounters;
use serde::{Deserialize, Serialize};

use crate::control::{ControlState, LimiterConfig, Trigger};
use crate::events::{Condition, EventKind, MeterEvent};

/// The `[cosem]` section: where the COSEM server listens and the credentials of its
/// associations. Absent: no COSEM server.
///
/// ```toml
/// [cosem]
/// listen = "127.0.0.1:4059"
/// lls_password = "demo-lls"
/// # Green Book example keys and titles: the documented demo credentials, never for a real meter.
/// block_cipher_key = "000102030405060708090A0B0C0D0E0F"
/// authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
/// client_system_title = "4D4D4D0000000001"
/// system_title = "4D4D4D0000BC614E"
/// capture_period_s = 900
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosemConfig {
    /// TCP wrapper listen address; 4059 is the IANA port of DLMS/COSEM.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// This meter's system title (16 hex digits: 3-letter manufacturer id + serial).
    pub system_title: String,
    /// LLS password of the reader association (client SAP 17).
    pub lls_password: String,
    /// Global unicast encryption key (EK) of the management association, 32 hex digits.
    pub block_cipher_key: String,
    /// Authentication key (AK) of the management association, 32 hex digits.
    pub authentication_key: String,
    /// System title of the management client (the head-end), 16 hex digits.
    pub client_system_title: String,
    /// Load profile (1.0.99.1.0.255) capture period in seconds (default 900 = 15 min).
    #[serde(default = "default_capture_period_s")]
    pub capture_period_s: u32,
    /// Load profile capacity in entries (default 2880: 30 days of 15-min rows). The rows are
    /// kept in a file under `data_dir/cosem` and survive restarts.
    #[serde(default = "default_profile_entries")]
    pub profile_entries: u32,
    /// Entries kept per event log (standard, fraud, disconnector), default 100.
    #[serde(default = "default_event_log_entries")]
    pub event_log_entries: u32,
}

impl fmt::Debug for CosemConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosemConfig")
            .field("listen", &self.listen)
            .field("system_title", &self.system_title)
            .field("lls_password", &"<redacted>")
            .field("keys", &"<redacted>")
            .field("client_system_title", &self.client_system_title)
            .field("capture_period_s", &self.capture_period_s)
            .field("profile_entries", &self.profile_entries)
            .field("event_log_entries", &self.event_log_entries)
            .finish()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], dlms::wrapper::PORT))
}
const fn default_capture_period_s() -> u32 {
    900
}
const fn default_profile_entries() -> u32 {
    2880
}
const fn default_event_log_entries() -> u32 {
    100
}

fn hex_bytes<const N: usize>(field: &str, text: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("cosem.{field} must be {} hex digits", 2 * N));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("cosem.{field} must be {} hex digits", 2 * N))?;
    }
    Ok(out)
}

impl CosemConfig {
    /// The demo credentials documented in the README: LLS `demo-lls`, the Green Book example
    /// keys and system titles. For demos and tests only.
    pub fn demo(listen: SocketAddr) -> CosemConfig {
        CosemConfig {
            listen,
            system_title: "4D4D4D0000BC614E".into(),
            lls_password: "demo-lls".into(),
            block_cipher_key: "000102030405060708090A0B0C0D0E0F".into(),
            authentication_key: "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF".into(),
            client_system_title: "4D4D4D0000000001".into(),
            capture_period_s: default_capture_period_s(),
            profile_entries: default_profile_entries(),
            event_log_entries: default_event_log_entries(),
        }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.server_config().map(|_| ())?;
        if self.lls_password.is_empty() {
            return Err("cosem.lls_password must not be empty".into());
        }
        if self.capture_period_s == 0 || self.capture_period_s > 86_400 {
            return Err("cosem.capture_period_s must be 1..=86400".into());
        }
        if self.profile_entries == 0 || self.profile_entries > 100_000 {
            return Err("cosem.profile_entries must be 1..=100000".into());
        }
        if self.event_log_entries == 0 || self.event_log_entries > 10_000 {
            return Err("cosem.event_log_entries must be 1..=10000".into());
        }
        Ok(())
    }

    /// The `dlms` server settings for these credentials.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let system_title: SystemTitle = hex_bytes("system_title", &self.system_title)?;
        let client: SystemTitle = hex_bytes("client_system_title", &self.client_system_title)?;
        let keys = Keys {
            block_cipher_key: hex_bytes("block_cipher_key", &self.block_cipher_key)?,
            authentication_key: hex_bytes("authentication_key", &self.authentication_key)?,
        };
        Ok(ServerConfig::wattline(
            system_title,
            self.lls_password.as_bytes(),
            keys,
            client,
        ))
    }
}

/// Per-phase values of the last metrology window (or device reading).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseValues {
    pub v_rms: f64,
    pub i_rms: f64,
    pub p_w: f64,
    pub pf: f64,
    /// Voltage and current THD in percent; `None` when the source does not measure it.
    pub v_thd_pct: Option<f64>,
    pub i_thd_pct: Option<f64>,
}

/// What the pipeline last measured and decided: the live side of the COSEM objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveValues {
    pub counters: EnergyCounters,
    /// One or three phases; empty before the first window.
    pub phases: Vec<PhaseValues>,
    pub total_p_w: f64,
    pub total_pf: f64,
    pub freq_hz: Option<f64>,
    pub relay: Option<ControlState>,
    pub control_mode: u8,
    pub limiter: Option<LimiterConfig>,
    /// Meter clock minus system clock (a `clock_set` command moves it).
    pub clock_offset_ms: i64,
}

impl LiveValues {
    /// Takes the instantaneous values of a metrology window.
    pub fn set_window(&mut self, w: &metrology::WindowReport) {
        self.phases = w
            .phases
            .iter()
            .map(|p| PhaseValues {
                v_rms: p.v_rms,
                i_rms: p.i_rms,
                p_w: p.p_w,
                pf: p.pf,
                v_thd_pct: Some(p.v_thd_pct),
                i_thd_pct: Some(p.i_thd_pct),
            })
            .collect();
        self.total_p_w = w.total.p_w;
        self.total_pf = w.total.pf;
        self.freq_hz = (!w.flags.no_voltage).then_some(w.freq_hz);
    }

    /// Takes the values a metering device reported (no THD: devices do not report it).
    pub fn set_measured(&mut self, m: &crate::sources::DeviceMeasurement) {
        self.phases = m
            .phases
            .iter()
            .map(|p| PhaseValues {
                v_rms: p.v_rms,
                i_rms: p.i_rms,
                p_w: p.p_w,
                pf: p.pf.unwrap_or_else(|| {
                    let s = p.v_rms * p.i_rms;
                    if s > 0.0 { p.p_w / s } else { 0.0 }
                }),
                v_thd_pct: None,
                i_thd_pct: None,
            })
            .collect();
        self.total_p_w = m.phases.iter().map(|p| p.p_w).sum();
        let s: f64 = m.phases.iter().map(|p| p.v_rms * p.i_rms).sum();
        self.total_pf = if s > 0.0 { self.total_p_w / s } else { 0.0 };
        self.freq_hz = m.freq_hz;
    }
}

/// Which COSEM event log an event belongs to (IDIS: standard 0.0.99.98.0, fraud
/// 0.0.99.98.1, disconnector 0.0.99.98.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLogKind {
    Standard = 0,
    Fraud = 1,
    Disconnector = 2,
}

/// One row of a COSEM event log: when and the event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEntry {
    pub at_unix_ms: i64,
    pub code: u8,
}

/// The event code and log of a meter event, IDIS-style numbering (standard: 1 power down,
/// 2 power up, 3 clock adjusted; fraud: 40 cover opened, 41 cover closed, 42/43 magnetic
/// field, 44/45 current mismatch, 46/47 reverse energy, 48/49 current without voltage;
/// disconnector: 59 remote disconnect, 60 remote reconnect, 61 manual disconnect,
/// 62 manual reconnect, 63 local disconnect, 64 local reconnect, 65 limiter threshold
/// exceeded, 66 refused).
pub fn event_code(e: &MeterEvent) -> Option<(EventLogKind, u8)> {
    use crate::control::ControlEvent;
    let fraud = |c: &Condition, raised: bool| -> Option<(EventLogKind, u8)> {
        let base = match c {
            Condition::PowerLoss => {
                return Some((EventLogKind::Standard, if raised { 1 } else { 2 }));
            }
            Condition::CoverOpen => 40,
            Condition::MagneticField => 42,
            Condition::CurrentMismatch => 44,
            Condition::ReverseEnergy => 46,
            Condition::CurrentWithoutVoltage { .. } => 48,
        };
        Some((EventLogKind::Fraud, if raised { base } else { base + 1 }))
    };
    match &e.kind {
        EventKind::Raised { condition, .. } => fraud(condition, true),
        EventKind::Cleared { condition } => fraud(condition, false),
        EventKind::ClockJump { .. } => Some((EventLogKind::Standard, 3)),
        EventKind::Restarted { .. } => Some((EventLogKind::Standard, 2)),
        EventKind::Control { event } => match event {
            ControlEvent::RelayStateChanged { trigger, .. } => Some((
                EventLogKind::Disconnector,
                match trigger {
                    Trigger::RemoteDisconnect => 59,
                    Trigger::RemoteReconnect => 60,
                    Trigger::ManualDisconnect => 61,
                    Trigger::ManualReconnect => 62,
                    Trigger::LocalDisconnect => 63,
                    Trigger::LocalReconnect => 64,
                },
            )),
            ControlEvent::Limiter(_) => Some((EventLogKind::Disconnector, 65)),
            ControlEvent::TriggerRefused { .. } => Some((EventLogKind::Disconnector, 66)),
        },
    }
}

/// The three event logs, newest last, each bounded.
#[derive(Debug, Clone, Default)]
pub struct EventLogs {
    pub logs: [Vec<EventEntry>; 3],
    pub capacity: usize,
}

impl EventLogs {
    pub fn push(&mut self, e: &MeterEvent) {
        if let Some((kind, code)) = event_code(e) {
            let log = &mut self.logs[kind as usize];
            if log.len() >= self.capacity.max(1) {
                log.remove(0);
            }
            log.push(EventEntry {
                at_unix_ms: e.at_unix_ms,
                code,
            });
        }
    }
}

/// State shared between the pipeline (writer) and the COSEM connections (readers).
#[derive(Debug)]
pub struct CosemShared {
    pub live: Mutex<LiveValues>,
    pub events: Mutex<EventLogs>,
    pub profile: Mutex<LoadProfileStore>,
    pub meter_name: String,
}

impl CosemShared {
    pub fn lock_live(&self) -> std::sync::MutexGuard<'_, LiveValues> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn lock_events(&self) -> std::sync::MutexGuard<'_, EventLogs> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn lock_profile(&self) -> std::sync::MutexGuard<'_, LoadProfileStore> {
        self.profile.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A change the COSEM server asks of the pipeline; the pipeline answers on `reply`.
#[derive(Debug)]
pub enum CosemRequest {
    /// Disconnect control method 1 (`remote_disconnect`) or 2 (`remote_reconnect`).
    Relay {
        trigger: Trigger,
        client_sap: u16,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Limiter attributes written by the management association.
    Limiter {
        config: LimiterConfig,
        client_sap: u16,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
}

/// Builds the shared state: the persisted load profile and the event logs refilled from the
/// agent's event log.
pub fn open_shared(
    config: &CosemConfig,
    data_dir: &std::path::Path,
    meter_name: &str,
    past_events: &[MeterEvent],
) -> Result<Arc<CosemShared>, String> {
    let profile = LoadProfileStore::open(
        &data_dir.join("cosem").join("load_profile.csv"),
        config.profile_entries as usize,
    )?;
    let mut events = EventLogs {
        logs: Default::default(),
        capacity: config.event_log_entries as usize,
    };
    for e in past_events {
        events.push(e);
    }
    Ok(Arc::new(CosemShared {
        live: Mutex::new(LiveValues::default()),
        events: Mutex::new(events),
        profile: Mutex::new(profile),
        meter_name: meter_name.to_string(),
    }))
}

#[cfg(test)]
mod tests;
