//! `/api/v1/customers`: list, get, create, update. Operators see all; a customer account sees
//! only its own customer record (others answer 404).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{Body, check_customer_id};
use crate::Customer;
use crate::http::{ApiError, AppState, Caller, Role};

fn customer_json(c: &Customer) -> Value {
    json!({ "id": c.id, "name": c.name, "time_zone": c.time_zone })
}

pub(crate) fn create_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "name"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "time_zone": {"type": "string", "description": "IANA zone (default UTC)"}
        }
    })
}

pub(crate) fn update_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "time_zone": {"type": "string"}
        }
    })
}

pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let customers: Vec<Value> = state
        .store
        .customers()
        .await?
        .iter()
        .filter(|c| caller.may_see_customer(&c.id))
        .map(customer_json)
        .collect();
    Ok(Json(json!({ "customers": customers })))
}

async fn visible(caller: &Caller, state: &AppState, id: &str) -> Result<Customer, ApiError> {
    let not_found = || ApiError::not_found(format!("no customer {id:?}"));
    if !caller.may_see_customer(id) {
        return Err(not_found());
    }
    state.store.customer(id).await?.ok_or_else(not_found)
}

pub(crate) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(customer_json(&visible(&caller, &state, &id).await?)))
}

/// A new customer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Create {
    id: String,
    name: String,
    #[serde(default)]
    time_zone: Option<String>,
}

/// Changes to a customer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Update {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

fn check(c: &Customer) -> Result<(), ApiError> {
    check_customer_id("id", &c.id)?;
    if c.name.trim().is_empty() || c.name.len() > 200 {
        return Err(ApiError::invalid("`name`: must be 1 to 200 characters"));
    }
    crate::store::parse_tz(&c.time_zone).map_err(|_| {
        ApiError::invalid(format!(
            "`time_zone`: {:?} is not an IANA time zone",
            c.time_zone
        ))
    })?;
    Ok(())
}

pub(crate) async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Body(req): Body<Create>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let c = Customer {
        id: req.id,
        name: req.name,
        time_zone: req.time_zone.unwrap_or_else(|| "UTC".to_owned()),
    };
    check(&c)?;
    if state.store.customer(&c.id).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "customer {:?} already exists",
            c.id
        )));
    }
    state.store.upsert_customer(&c).await?;
    tracing::info!(customer = %c.id, by = %caller.username, "customer created");
    crate::auth::audit(
        &state,
        &caller,
        "customer.create",
        &format!("customer:{}", c.id),
        &format!("time zone {}", c.time_zone),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(customer_json(&c))))
}

pub(crate) async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<Update>,
) -> Result<Json<Value>, ApiError> {
    let mut c = visible(&caller, &state, &id).await?;
    caller.require(Role::Operator)?;
    if let Some(n) = req.name {
        c.name = n;
    }
    if let Some(tz) = req.time_zone {
        c.time_zone = tz;
    }
    check(&c)?;
    state.store.upsert_customer(&c).await?;
    tracing::info!(customer = %c.id, by = %caller.username, "customer updated");
    crate::auth::audit(
        &state,
        &caller,
        "customer.update",
        &format!("customer:{}", c.id),
        &format!("time zone {}", c.time_zone),
    )
    .await?;
    Ok(Json(customer_json(&c)))
}
