//! `GET /api/v1/quarantine?limit=&raw=`: what ingest refused, newest first, with the reason a
//! person can read, the meter it claimed to come from and its size; the bytes as base64 on
//! request (`raw=true`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use serde_json::{Value, json};

use super::params::Params;
use crate::http::{ApiError, AppState, Caller, Role};

pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let p = Params::new(query, &["limit", "raw"])?;
    let limit = p.int("limit", 1..=1_000)?.unwrap_or(100) as u32;
    let raw = p.bool("raw")?.unwrap_or(false);
    let entries: Vec<Value> = state
        .store
        .quarantine(limit)
        .await?
        .into_iter()
        .map(|q| {
            let e = &q.entry;
            let mut v = json!({
                "id": q.id,
                "received_ms": e.received_ms,
                "source": e.source,
                "meter": e.meter_claimed,
                "reason": e.reason,
                "size_bytes": e.raw_len,
                "kept_bytes": e.raw.len(),
            });
            if raw {
                v["raw_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&e.raw)
                    .into();
            }
            v
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}
