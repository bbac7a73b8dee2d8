//! Commands from the server to a meter (DESIGN §3.4): relay, limiter, reporting interval, clock.
//! They travel sealed in `down` envelopes and are answered with `ack` records.

use ciborium::Value;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cbor;

/// Most commands one `down` envelope may carry.
pub const MAX_COMMANDS_PER_ENVELOPE: usize = 64;
/// Longest command id, bytes.
pub const MAX_COMMAND_ID_LEN: usize = 64;
/// Shortest reporting interval a meter accepts (seed 002: programmable sampling), seconds.
pub const MIN_REPORTING_INTERVAL_S: u32 = 1;
/// Longest reporting interval: 15 minutes, the usual billing period.
pub const MAX_REPORTING_INTERVAL_S: u32 = 900;

/// A command with its identity and life time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per meter, chosen by the server; echoed in the `ack`.
    pub id: String,
    /// When the server issued it, Unix ms UTC.
    pub issued_ms: i64,
    /// After this instant (Unix ms UTC) the meter must not carry it out and acks `expired`.
    pub expires_ms: i64,
    /// What to do.
    pub action: Action,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Remote reconnect (DLMS class 70 `remote_reconnect`).
    RelayConnect,
    /// Remote disconnect (DLMS class 70 `remote_disconnect`).
    RelayDisconnect,
    /// Set the limiter (DLMS class 71): cut off when active power stays above `threshold_w`
    /// for `duration_s`.
    LimiterSet {
        /// Active power threshold, W.
        threshold_w: f64,
        /// Over-threshold duration before the cut-off, seconds.
        duration_s: f64,
    },
    /// Change the reporting interval.
    ReportingInterval {
        /// New interval, seconds, 1 to 900.
        interval_s: u32,
    },
    /// Set the meter clock.
    ClockSet {
        /// The time to set, Unix ms UTC.
        unix_ms: i64,
    },
}

/// A command that could not be decoded or validated: answered with a `rejected` ack.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedCommand {
    /// The id, when it could be read.
    pub id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

impl Command {
    /// Checks values a well-formed CBOR map can still get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > MAX_COMMAND_ID_LEN {
            return Err(format!(
                "command id must be 1 to {MAX_COMMAND_ID_LEN} bytes"
            ));
        }
        if self.expires_ms < self.issued_ms {
            return Err("expires_ms is before issued_ms".into());
        }
        match self.action {
            Action::LimiterSet {
                threshold_w,
                duration_s,
            } => {
                if !(threshold_w.is_finite() && threshold_w > 0.0) {
                    return Err(format!(
                        "limiter threshold_w {threshold_w} must be a positive number"
                    ));
                }
                if !(duration_s.is_finite() && (0.0..=86_400.0).contains(&duration_s)) {
                    return Err(format!(
                        "limiter duration_s {duration_s} must be 0 to 86400"
                    ));
                }
            }
            Action::ReportingInterval { interval_s } => {
                if !(MIN_REPORTING_INTERVAL_S..=MAX_REPORTING_INTERVAL_S).contains(&interval_s) {
                    return Err(format!(
                        "reporting interval {interval_s} s outside {MIN_REPORTING_INTERVAL_S} to {MAX_REPORTING_INTERVAL_S} s"
                    ));
                }
            }
            Action::ClockSet { unix_ms } => {
                if unix_ms < 0 {
                    return Err(format!("clock_set unix_ms {unix_ms} is before 1970"));
                }
            }
            Action::RelayConnect | Action::RelayDisconnect => {}
        }
        Ok(())
    }

    /// True when the command must no longer be carried out at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms > self.expires_ms
    }
}

/// Encodes commands as the plaintext of a `down` envelope.
pub fn encode_commands(commands: &[Command]) -> Result<Vec<u8>, Error> {
    if commands.len() > MAX_COMMANDS_PER_ENVELOPE {
        return Err(Error::too_large(
            "command list",
            commands.len(),
            MAX_COMMANDS_PER_ENVELOPE,
        ));
    }
    cbor::to_vec("command list", commands)
}

/// Decodes the plaintext of a `down` envelope. A plaintext that is not a list of maps is an
/// error; each command that fails decoding or validation is returned as a
/// [`RejectedCommand`] so the meter can answer it.
pub fn decode_commands(plaintext: &[u8]) -> Result<Vec<Result<Command, RejectedCommand>>, Error> {
    let value = cbor::value_from_slice("command list", plaintext)?;
    let Value::Array(items) = value else {
        return Err(Error::malformed("command list", "not an array"));
    };
    if items.len() > MAX_COMMANDS_PER_ENVELOPE {
        return Err(Error::too_large(
            "command list",
            items.len(),
            MAX_COMMANDS_PER_ENVELOPE,
        ));
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, item)| decode_one(i, item))
        .collect())
}

fn decode_one(index: usize, item: &Value) -> Result<Command, RejectedCommand> {
    let id = match item {
        Value::Map(map) => match cbor::map_get(map, "id") {
            Some(Value::Text(t)) if t.len() <= MAX_COMMAND_ID_LEN => Some(t.clone()),
            _ => None,
        },
        _ => None,
    };
    let command: Command =
        cbor::from_value(&format!("command {index}"), item).map_err(|e| RejectedCommand {
            id: id.clone(),
            reason: e.to_string(),
        })?;
    command.validate().map_err(|reason| RejectedCommand {
        id: id.clone(),
        reason: format!("command {index}: {reason}"),
    })?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: Action) -> Command {
        Command {
            id: "c-1".into(),
            issued_ms: 1_000,
            expires_ms: 61_000,
            action,
        }
    }

    #[test]
    fn every_action_round_trips() {
        let all = vec![
            cmd(Action::RelayConnect),
            cmd(Action::RelayDisconnect),
            cmd(Action::LimiterSet {
                threshold_w: 3_500.0,
                duration_s: 30.0,
            }),
            cmd(Action::ReportingInterval { interval_s: 60 }),
            cmd(Action::ClockSet {
                unix_ms: 1_700_000_000_000,
            }),
        ];
        let bytes = encode_commands(&all).unwrap();
        let back: Vec<Command> = decode_commands(&bytes)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, all);
    }

    #[test]
    fn malformed_command_is_rejected_with_its_id_and_a_reason() {
        let bad = Value::Array(vec![Value::Map(vec![
            (Value::Text("id".into()), Value::Text("c-9".into())),
            (Value::Text("issued_ms".into()), Value::Integer(1.into())),
            (Value::Text("expires_ms".into()), Value::Integer(2.into())),
            (
                Value::Text("action".into()),
                Value::Map(vec![(
                    Value::Text("type".into()),
                    Value::Text("self_destruct".into()),
                )]),
            ),
        ])]);
        let bytes = cbor::to_vec("t", &bad).unwrap();
        let out = decode_commands(&bytes).unwrap();
        let rejected = out[0].clone().unwrap_err();
        assert_eq!(rejected.id.as_deref(), Some("c-9"));
        assert!(
            rejected.reason.contains("self_destruct"),
            "{}",
            rejected.reason
        );
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for action in [
            Action::ReportingInterval { interval_s: 0 },
            Action::ReportingInterval { interval_s: 901 },
            Action::LimiterSet {
                threshold_w: f64::NAN,
                duration_s: 1.0,
            },
            Action::LimiterSet {
                threshold_w: -1.0,
                duration_s: 1.0,
            },
            Action::ClockSet { unix_ms: -5 },
        ] {
            let bytes = encode_commands(&[cmd(action.clone())]).unwrap();
            let out = decode_commands(&bytes).unwrap();
            assert!(out[0].is_err(), "{action:?} accepted");
        }
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline() {
        let c = cmd(Action::RelayConnect);
        assert!(!c.is_expired(61_000));
        assert!(c.is_expired(61_001));
    }
}
