//! The live status file the agent rewrites about once a second and `wattline agent status`
//! prints: live quantities, relay, uplink, outbox, registers. A file (replaced atomically)
//! rather than a socket: readable with no running agent, by `cat`, and by monitoring tools.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One snapshot of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Meter id.
    pub meter: String,
    /// Process id of the agent that wrote it.
    pub pid: u32,
    /// When it was written, Unix ms.
    pub updated_at_ms: i64,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Counter epoch.
    pub boot_id: u64,
    /// `seq` of the next record.
    pub next_seq: u64,
    /// Reporting interval in force, seconds.
    pub reporting_interval_s: u32,
    /// Energy registers now.
    pub counters: schema::EnergyCounters,
    /// The last reading, if any (live quantities).
    pub last_reading: Option<schema::Reading>,
    /// Relay state (`connected`, `disconnected`, `ready_for_reconnection`) and control mode.
    pub relay_state: String,
    /// DLMS class 70 control mode.
    pub relay_mode: u8,
    /// Uplink: `connected`, `connecting`, `disconnected`, `connection_barred`, with a reason.
    pub uplink: serde_json::Value,
    /// Records waiting in the outbox.
    pub outbox_records: u64,
    /// Bytes on disk in the outbox.
    pub outbox_bytes: u64,
    /// Timestamp of the oldest waiting record, Unix ms.
    pub outbox_oldest_ms: Option<i64>,
    /// Outbox policy when full.
    pub outbox_when_full: String,
    /// Readings dropped by the `drop_oldest_readings` policy since start.
    pub outbox_dropped_readings_total: u64,
    /// Appends refused because the outbox was full since start.
    pub outbox_full_refusals_total: u64,
    /// Records appended since start.
    pub outbox_appended_total: u64,
    /// Records acknowledged by the broker since start.
    pub outbox_acked_total: u64,
    /// Bytes cut out of damaged outbox segments at start.
    pub outbox_damaged_bytes_total: u64,
    /// Source faults since start.
    pub source_errors_total: u64,
    /// What this meter forwarded for its neighbours (`[neighbour] listen`), if it does.
    #[serde(default)]
    pub forwarder: Option<crate::neighbour::ForwarderStats>,
}

impl StatusSnapshot {
    /// Writes the snapshot to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a snapshot; the error says which file and what was wrong.
    pub fn read(path: &Path) -> Result<StatusSnapshot, String> {
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read agent status {}: {e} (is the agent running with this config?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Human-readable lines for `wattline agent status`.
    pub fn render(&self, now_ms: i64) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let age_s = (now_ms - self.updated_at_ms).max(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "meter {}  (pid {}, up {} s, status {:.1} s old{})",
            self.meter,
            self.pid,
            self.uptime_s,
            age_s,
            if age_s > 10.0 {
                ", AGENT NOT UPDATING"
            } else {
                ""
            }
        );
        let link = self.uplink.get("link").cloned().unwrap_or_default();
        let state = link
            .get("state")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown");
        let text = |key: &str| link.get(key).and_then(|v| v.as_str()).unwrap_or("?");
        let shown = match state {
            "connection_barred" => "connection barred".to_owned(),
            "routed_via" => format!(
                "routed via {} ({}); own uplink: {}",
                text("meter"),
                text("addr"),
                text("own_uplink")
            ),
            other => other.to_owned(),
        };
        let reason = link
            .get("reason")
            .and_then(|r| r.as_str())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let _ = writeln!(out, "uplink   {shown}{reason}");
        let routed = self
            .uplink
            .get("envelopes_routed")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if routed > 0 {
            let _ = writeln!(out, "routed   {routed} envelopes through neighbours");
        }
        if let Some(f) = &self.forwarder {
            let list = |m: &std::collections::BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "forward  on {} ({} neighbours connected): forwarded {} envelopes [{}], refused {} [{}]{}",
                f.listen,
                f.connections,
                f.forwarded.values().sum::<u64>(),
                list(&f.forwarded),
                f.refused.values().sum::<u64>(),
                list(&f.refused),
                f.last_refusal
                    .as_ref()
                    .map(|r| format!("; last refusal {r}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "relay    {} (control mode {})",
            self.relay_state, self.relay_mode
        );
        let oldest = self
            .outbox_oldest_ms
            .map(|t| format!(", oldest {:.0} s ago", (now_ms - t).max(0) as f64 / 1000.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "outbox   {} records, {} bytes{oldest}; policy {}, {} readings dropped, {} refusals",
            self.outbox_records,
            self.outbox_bytes,
            self.outbox_when_full,
            self.outbox_dropped_readings_total,
            self.outbox_full_refusals_total
        );
        let c = &self.counters;
        let _ = writeln!(
            out,
            "energy   import {:.3} Wh, export {:.3} Wh, Q1..Q4 {:.3} {:.3} {:.3} {:.3} varh (boot {}, next seq {})",
            c.import_wh,
            c.export_wh,
            c.q1_varh,
            c.q2_varh,
            c.q3_varh,
            c.q4_varh,
            self.boot_id,
            self.next_seq
        );
        match &self.last_reading {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "live     {:.3} Hz, P {:.1} W, S {:.1} VA, PF {:.3} (interval {} s)",
                    r.freq_hz, r.total.p_w, r.total.s_va, r.total.pf, self.reporting_interval_s
                );
                for p in &r.phases {
                    let _ = writeln!(
                        out,
                        "  {:?}      {:.2} V  {:.3} A  {:.1} W  PF {:.3}",
                        p.phase, p.v_rms, p.i_rms, p.p_w, p.pf
                    );
                }
            }
            None => {
                let _ = writeln!(out, "live     no reading yet");
            }
        }
        out
    }
}
