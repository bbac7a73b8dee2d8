//! `/api/v1/meters`: list, get (with the latest reading, relay state and last contact),
//! register, update, deregister, assign to a customer.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use schema::MeterId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{Body, Params, check_customer_id};
use crate::http::{ApiError, AppState, Caller, Role};
use crate::{Meter, MeterStatus, StoredReading};

/// A meter as the API shows it.
pub(crate) fn meter_json(m: &Meter) -> Value {
    json!({
        "id": m.id.as_str(),
        "customer": m.customer,
        "parent": m.parent.as_ref().map(MeterId::as_str),
        "site": m.site,
        "time_zone": m.time_zone,
        "reporting_interval_s": m.reporting_interval_s,
        "allowed_export": m.allowed_export,
        "status": m.status.as_str(),
        "last_seen_ms": m.last_seen_ms,
        "clock_drift_ms": m.clock_drift_ms,
    })
}

/// A stored reading as the API shows it.
pub(crate) fn reading_json(r: &StoredReading) -> Value {
    json!({
        "t_ms": r.t_ms,
        "boot_id": r.boot_id,
        "seq": r.seq,
        "reading": r.reading,
    })
}

pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(query, &["status", "customer", "site", "search", "limit"])?;
    let status = p
        .str("status")
        .map(|s| {
            MeterStatus::parse(s).map_err(|_| {
                ApiError::invalid(format!(
                    "query parameter `status`: {s:?} is not `active` or `deregistered`"
                ))
            })
        })
        .transpose()?;
    let limit = p.int("limit", 1..=10_000)?.unwrap_or(1_000) as usize;
    let search = p.str("search").map(str::to_lowercase);
    let meters: Vec<Value> = state
        .store
        .meters()
        .await?
        .iter()
        .filter(|m| caller.may_see_meter(m))
        .filter(|m| status.is_none_or(|s| m.status == s))
        .filter(|m| {
            p.str("customer")
                .is_none_or(|c| m.customer.as_deref() == Some(c))
        })
        .filter(|m| p.str("site").is_none_or(|s| m.site.as_deref() == Some(s)))
        .filter(|m| {
            search.as_deref().is_none_or(|q| {
                m.id.as_str().contains(q)
                    || m.site
                        .as_deref()
                        .is_some_and(|s| s.to_lowercase().contains(q))
            })
        })
        .take(limit)
        .map(meter_json)
        .collect();
    Ok(Json(json!({ "meters": meters })))
}

pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    let latest = state
        .store
        .latest_readings()
        .await?
        .into_iter()
        .find(|r| r.meter == meter.id);
    // The relay state is the one its newest relay event reports (the agent raises one per
    // transition); unknown when the meter has not reported one in the last 90 days.
    let now = crate::now_ms();
    let relay = state
        .store
        .events(&meter.id, now - 90 * 86_400_000, now + 86_400_000)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.event.class == schema::EventClass::Relay)
        .map(|e| json!({ "code": e.event.code, "active": e.event.active, "t_ms": e.t_ms }));
    let mut body = meter_json(&meter);
    body["latest_reading"] = latest.as_ref().map_or(Value::Null, reading_json);
    body["relay"] = relay.unwrap_or(Value::Null);
    Ok(Json(body))
}

/// Fields of a registration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    id: String,
    #[serde(default)]
    key_ref: Option<String>,
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    reporting_interval_s: Option<u32>,
    #[serde(default)]
    allowed_export: Option<bool>,
}

pub(crate) fn register_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$", "description": "meter id = certificate common name"},
            "key_ref": {"type": "string", "description": "where the meter key lives (default `<id>.key`)"},
            "customer": {"type": ["string", "null"]},
            "parent": {"type": ["string", "null"], "description": "observer meter upstream"},
            "site": {"type": ["string", "null"]},
            "time_zone": {"type": "string", "description": "IANA zone (default: the customer's, else UTC)"},
            "reporting_interval_s": {"type": "integer", "minimum": 1, "maximum": 86400},
            "allowed_export": {"type": "boolean"}
        }
    })
}

pub(crate) fn update_schema() -> Value {
    let mut s = register_schema();
    s["required"] = json!([]);
    s["properties"]
        .as_object_mut()
        .expect("object schema")
        .remove("id");
    s
}

pub(crate) fn assign_schema() -> Value {
    json!({
        "type": "object",
        "required": ["customer"],
        "additionalProperties": false,
        "properties": {"customer": {"type": ["string", "null"]}}
    })
}

/// Records a registration change in the audit trail with the meter's settings after it.
async fn audit_meter(
    state: &AppState,
    caller: &Caller,
    action: &str,
    meter: &Meter,
) -> Result<(), ApiError> {
    let opt = |o: Option<&str>| o.unwrap_or("-").to_owned();
    crate::auth::audit(
        state,
        caller,
        action,
        &format!("meter:{}", meter.id),
        &format!(
            "status {}, customer {}, parent {}, site {}",
            meter.status.as_str(),
            opt(meter.customer.as_deref()),
            opt(meter.parent.as_ref().map(|p| p.as_str())),
            opt(meter.site.as_deref())
        ),
    )
    .await
}

pub(crate) async fn register(
    caller: Caller,
    State(state): State<AppState>,
    Body(req): Body<Register>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let id = MeterId::parse(&req.id).map_err(|e| ApiError::invalid(format!("`id`: {e}")))?;
    if state.store.meter(&id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "meter {id} is already registered"
        )));
    }
    let mut meter = Meter::new(id.clone(), format!("{id}.key"));
    let update = Update {
        key_ref: req.key_ref,
        customer: req.customer.map(Some),
        parent: req.parent.map(Some),
        site: req.site.map(Some),
        time_zone: req.time_zone,
        reporting_interval_s: req.reporting_interval_s,
        allowed_export: req.allowed_export,
    };
    apply(&state, &mut meter, update, true).await?;
    state.store.upsert_meter(&meter).await?;
    tracing::info!(meter = %id, by = %caller.username, "meter registered");
    audit_meter(&state, &caller, "meter.register", &meter).await?;
    Ok((StatusCode::CREATED, Json(meter_json(&meter))))
}

/// Fields of an update; absent fields stay as they are, `null` clears an optional one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Update {
    #[serde(default)]
    key_ref: Option<String>,
    #[serde(default, deserialize_with = "present")]
    customer: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    parent: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    site: Option<Option<String>>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    reporting_interval_s: Option<u32>,
    #[serde(default)]
    allowed_export: Option<bool>,
}

/// Tells "field absent" (outer `None`) from "field null" (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Checks and applies `u` to `meter`; every message names the field.
async fn apply(state: &AppState, meter: &mut Meter, u: Update, new: bool) -> Result<(), ApiError> {
    if let Some(k) = u.key_ref {
        if k.is_empty() || k.len() > 256 {
            return Err(ApiError::invalid("`key_ref`: must be 1 to 256 characters"));
        }
        meter.key_ref = k;
    }
    let mut customer_tz = None;
    if let Some(c) = u.customer {
        if let Some(c) = &c {
            check_customer_id("customer", c)?;
            let Some(found) = state.store.customer(c).await? else {
                return Err(ApiError::invalid(format!("`customer`: no customer {c:?}")));
            };
            customer_tz = Some(found.time_zone);
        }
        meter.customer = c;
    }
    if let Some(p) = u.parent {
        meter.parent = match p {
            None => None,
            Some(p) => {
                let pid =
                    MeterId::parse(&p).map_err(|e| ApiError::invalid(format!("`parent`: {e}")))?;
                if pid == meter.id {
                    return Err(ApiError::invalid(
                        "`parent`: a meter cannot be its own parent",
                    ));
                }
                if state.store.meter(&pid).await?.is_none() {
                    return Err(ApiError::invalid(format!("`parent`: no meter {p:?}")));
                }
                Some(pid)
            }
        };
    }
    if let Some(s) = u.site {
        if s.as_deref().is_some_and(|s| s.len() > 200) {
            return Err(ApiError::invalid("`site`: at most 200 characters"));
        }
        meter.site = s.filter(|s| !s.is_empty());
    }
    match (u.time_zone, customer_tz) {
        (Some(tz), _) => {
            crate::store::parse_tz(&tz).map_err(|_| {
                ApiError::invalid(format!("`time_zone`: {tz:?} is not an IANA time zone"))
            })?;
            meter.time_zone = tz;
        }
        // A new meter follows its customer's zone unless told otherwise.
        (None, Some(tz)) if new => meter.time_zone = tz,
        _ => {}
    }
    if let Some(i) = u.reporting_interval_s {
        if !(1..=86_400).contains(&i) {
            return Err(ApiError::invalid(format!(
                "`reporting_interval_s`: {i} is outside 1 to 86400"
            )));
        }
        meter.reporting_interval_s = i;
    }
    if let Some(e) = u.allowed_export {
        meter.allowed_export = e;
    }
    Ok(())
}

pub(crate) async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<Update>,
) -> Result<Json<Value>, ApiError> {
    let mut meter = caller.visible_meter(&state, &id).await?;
    caller.require(Role::Operator)?;
    apply(&state, &mut meter, req, false).await?;
    state.store.upsert_meter(&meter).await?;
    tracing::info!(meter = %meter.id, by = %caller.username, "meter updated");
    audit_meter(&state, &caller, "meter.update", &meter).await?;
    Ok(Json(meter_json(&meter)))
}

pub(crate) async fn deregister(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut meter = caller.visible_meter(&state, &id).await?;
    caller.require(Role::Admin)?;
    meter.status = MeterStatus::Deregistered;
    state.store.upsert_meter(&meter).await?;
    tracing::info!(meter = %meter.id, by = %caller.username, "meter deregistered");
    audit_meter(&state, &caller, "meter.deregister", &meter).await?;
    Ok(Json(meter_json(&meter)))
}

/// Body of an assignment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assign {
    customer: Option<String>,
}

pub(crate) async fn assign(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<Assign>,
) -> Result<Json<Value>, ApiError> {
    let mut meter = caller.visible_meter(&state, &id).await?;
    caller.require(Role::Operator)?;
    let update = Update {
        key_ref: None,
        customer: Some(req.customer),
        parent: None,
        site: None,
        time_zone: None,
        reporting_interval_s: None,
        allowed_export: None,
    };
    apply(&state, &mut meter, update, false).await?;
    state.store.upsert_meter(&meter).await?;
    tracing::info!(meter = %meter.id, customer = ?meter.customer, by = %caller.username, "meter assigned");
    audit_meter(&state, &caller, "meter.assign", &meter).await?;
    Ok(Json(meter_json(&meter)))
}
