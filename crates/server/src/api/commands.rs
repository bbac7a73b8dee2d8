//! Commands (DESIGN §3.4): `POST /api/v1/meters/{id}/commands` queues one (operators; a reason
//! and an expiry are required), `GET /api/v1/meters/{id}/commands` lists a meter's, and
//! `GET /api/v1/commands/{id}` shows one with its audit log. The command dispatcher
//! (`crate::commands`) carries them to the meter; creating one wakes it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use schema::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{Body, Params, parse_time_ms};
use crate::http::{ApiError, AppState, Caller, Role};
use crate::{CommandStatus, MeterStatus, NewCommand, StoredCommand};

/// Longest expiry a command may get.
const MAX_EXPIRY_S: i64 = 30 * 86_400;

/// The API name of an action.
fn kind(a: &Action) -> &'static str {
    match a {
        Action::RelayConnect => "relay_connect",
        Action::RelayDisconnect => "relay_disconnect",
        Action::LimiterSet { .. } => "limiter_set",
        Action::ReportingInterval { .. } => "reporting_interval",
        Action::ClockSet { .. } => "clock_set",
    }
}

pub(crate) fn command_json(c: &StoredCommand) -> Value {
    let n = &c.command;
    json!({
        "id": c.id,
        "meter": n.meter.as_str(),
        "kind": kind(&n.action),
        "action": n.action,
        "reason": n.reason,
        "issued_by": n.issued_by,
        "issued_ms": n.issued_ms,
        "expires_ms": n.expires_ms,
        "status": c.status.as_str(),
        "updated_ms": c.updated_ms,
        "detail": c.detail,
    })
}

pub(crate) fn create_schema() -> Value {
    json!({
        "type": "object",
        "required": ["kind", "reason"],
        "additionalProperties": false,
        "properties": {
            "kind": {"enum": ["relay_connect", "relay_reconnect", "relay_disconnect", "limiter_set", "reporting_interval", "clock_set"],
                     "description": "relay_reconnect is relay_connect (DLMS class 70 remote_reconnect)"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500, "description": "why, for the audit log"},
            "expires_in_s": {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY_S},
            "expires_at": {"type": ["string", "integer"], "description": "ISO 8601 or Unix ms; give this or expires_in_s"},
            "threshold_w": {"type": "number", "exclusiveMinimum": 0, "description": "limiter_set"},
            "duration_s": {"type": "number", "minimum": 0, "maximum": 3600, "description": "limiter_set: over-threshold time before the cut-off"},
            "interval_s": {"type": "integer", "minimum": 1, "maximum": 900, "description": "reporting_interval"},
            "time": {"type": ["string", "integer"], "description": "clock_set: the time to set, ISO 8601 or Unix ms"}
        }
    })
}

/// A command as an operator sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Create {
    kind: String,
    reason: String,
    #[serde(default)]
    expires_in_s: Option<i64>,
    #[serde(default)]
    expires_at: Option<Value>,
    #[serde(default)]
    threshold_w: Option<f64>,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default)]
    interval_s: Option<u32>,
    #[serde(default)]
    time: Option<Value>,
}

/// A time given as a JSON string (ISO 8601) or number (Unix ms).
fn json_time(field: &str, v: &Value) -> Result<i64, ApiError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::invalid(format!(
                "`{field}`: give ISO 8601 text or Unix milliseconds"
            )));
        }
    };
    parse_time_ms(field, &text)
        .map_err(|e| ApiError::invalid(e.message.replace("query parameter ", "")))
}

fn action(req: &Create) -> Result<Action, ApiError> {
    let need =
        |name: &str| ApiError::invalid(format!("`{name}` is required for kind {:?}", req.kind));
    let action = match req.kind.as_str() {
        "relay_connect" | "relay_reconnect" => Action::RelayConnect,
        "relay_disconnect" => Action::RelayDisconnect,
        "limiter_set" => {
            let threshold_w = req.threshold_w.ok_or_else(|| need("threshold_w"))?;
            if !(threshold_w.is_finite() && threshold_w > 0.0 && threshold_w <= 1e7) {
                return Err(ApiError::invalid(format!(
                    "`threshold_w`: {threshold_w} is not a power above 0 and at most 10 MW"
                )));
            }
            let duration_s = req.duration_s.ok_or_else(|| need("duration_s"))?;
            if !(duration_s.is_finite() && (0.0..=3600.0).contains(&duration_s)) {
                return Err(ApiError::invalid(format!(
                    "`duration_s`: {duration_s} is outside 0 to 3600"
                )));
            }
            Action::LimiterSet {
                threshold_w,
                duration_s,
            }
        }
        "reporting_interval" => {
            let interval_s = req.interval_s.ok_or_else(|| need("interval_s"))?;
            if !(1..=900).contains(&interval_s) {
                return Err(ApiError::invalid(format!(
                    "`interval_s`: {interval_s} is outside 1 to 900"
                )));
            }
            Action::ReportingInterval { interval_s }
        }
        "clock_set" => Action::ClockSet {
            unix_ms: json_time("time", req.time.as_ref().ok_or_else(|| need("time"))?)?,
        },
        other => {
            return Err(ApiError::invalid(format!(
                "`kind`: {other:?} is not one of relay_connect, relay_reconnect, relay_disconnect, limiter_set, reporting_interval, clock_set"
            )));
        }
    };
    // Fields that belong to another kind are a mistake worth naming.
    let stray = [
        ("threshold_w", req.threshold_w.is_some(), "limiter_set"),
        ("duration_s", req.duration_s.is_some(), "limiter_set"),
        ("interval_s", req.interval_s.is_some(), "reporting_interval"),
        ("time", req.time.is_some(), "clock_set"),
    ];
    let k = kind(&action);
    for (field, given, owner) in stray {
        if given && k != owner {
            return Err(ApiError::invalid(format!(
                "`{field}` belongs to kind {owner}, not {:?}",
                req.kind
            )));
        }
    }
    Ok(action)
}

fn expiry(req: &Create, now: i64) -> Result<i64, ApiError> {
    let expires = match (req.expires_in_s, &req.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "`expires_in_s` and `expires_at`: give one, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "`expires_in_s` or `expires_at` is required: a command to an offline meter waits until then",
            ));
        }
        (Some(s), None) => {
            if !(1..=MAX_EXPIRY_S).contains(&s) {
                return Err(ApiError::invalid(format!(
                    "`expires_in_s`: {s} is outside 1 to {MAX_EXPIRY_S}"
                )));
            }
            now + s * 1000
        }
        (None, Some(at)) => json_time("expires_at", at)?,
    };
    if expires <= now {
        return Err(ApiError::invalid("`expires_at`: is not in the future"));
    }
    if expires > now + MAX_EXPIRY_S * 1000 {
        return Err(ApiError::invalid(format!(
            "`expires_at`: more than {} days ahead",
            MAX_EXPIRY_S / 86_400
        )));
    }
    Ok(expires)
}

pub(crate) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<Create>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    caller.require(Role::Operator)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::invalid("`reason`: must be 1 to 500 characters"));
    }
    let action = action(&req)?;
    let now = crate::now_ms();
    let expires_ms = expiry(&req, now)?;
    if meter.status == MeterStatus::Deregistered {
        return Err(ApiError::conflict(format!(
            "meter {} is deregistered; it takes no commands",
            meter.id
        )));
    }
    let stored = state
        .store
        .create_command(&NewCommand {
            meter: meter.id.clone(),
            action,
            issued_by: caller.username.clone(),
            reason: reason.to_owned(),
            issued_ms: now,
            expires_ms,
        })
        .await?;
    tracing::info!(command = stored.id, meter = %meter.id, by = %caller.username, kind = kind(&stored.command.action), "command queued");
    state.command_wake.notify_one();
    crate::auth::audit(
        &state,
        &caller,
        "command.create",
        &format!("meter:{}", meter.id),
        &format!("{} #{}: {reason}", kind(&stored.command.action), stored.id),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(command_json(&stored))))
}

pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(query, &["status"])?;
    let status = p
        .str("status")
        .map(|s| {
            CommandStatus::parse(s).map_err(|_| {
                ApiError::invalid(format!(
                    "query parameter `status`: {s:?} is not one of QUEUED, SENT, DELIVERED, SUCCEEDED, FAILED, EXPIRED"
                ))
            })
        })
        .transpose()?;
    let meter = caller.visible_meter(&state, &id).await?;
    let commands: Vec<Value> = state
        .store
        .commands(&meter.id, status)
        .await?
        .iter()
        .map(command_json)
        .collect();
    Ok(Json(
        json!({ "meter": meter.id.as_str(), "commands": commands }),
    ))
}

pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n: i64 = id.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::invalid(format!(
            "path parameter `id`: {id:?} is not a command id (a positive integer)"
        ))
    })?;
    let not_found = || ApiError::not_found(format!("no command {n}"));
    let cmd = state.store.command(n).await?.ok_or_else(not_found)?;
    // A command is as visible as its meter.
    caller
        .visible_meter(&state, cmd.command.meter.as_str())
        .await
        .map_err(|_| not_found())?;
    let audit: Vec<Value> = state
        .store
        .command_audit(n)
        .await?
        .iter()
        .map(|a| {
            json!({
                "at_ms": a.at_ms,
                "actor": a.actor,
                "from": a.from.map(CommandStatus::as_str),
                "to": a.to.as_str(),
                "note": a.note,
            })
        })
        .collect();
    let mut body = command_json(&cmd);
    body["audit"] = audit.into();
    Ok(Json(body))
}
