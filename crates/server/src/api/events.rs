//! `GET /api/v1/meters/{id}/events?from=&to=&class=`: a meter's events in a range.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::params::{Params, range};
use crate::http::{ApiError, AppState, Caller};

/// The event classes the API filters on.
const CLASSES: [&str; 7] = [
    "tamper",
    "relay",
    "limiter",
    "power_quality",
    "boot",
    "clock",
    "other",
];

/// Longest range one request may cover.
const MAX_SPAN_MS: i64 = 5 * 366 * 86_400_000;

/// Most events one answer holds (the newest are cut; `truncated` says so).
const MAX_EVENTS: usize = 10_000;

pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(query, &["from", "to", "class"])?;
    let class = match p.str("class") {
        None => None,
        Some(c) if CLASSES.contains(&c) => Some(crate::event_class_parse(c)),
        Some(c) => {
            return Err(ApiError::invalid(format!(
                "query parameter `class`: {c:?} is not one of {}",
                CLASSES.join(", ")
            )));
        }
    };
    let (from, to) = range(&p, 30 * 86_400_000, MAX_SPAN_MS)?;
    let meter = caller.visible_meter(&state, &id).await?;
    let mut events: Vec<Value> = state
        .store
        .events(&meter.id, from, to)
        .await?
        .into_iter()
        .filter(|e| class.is_none_or(|c| e.event.class == c))
        .map(|e| {
            json!({
                "t_ms": e.t_ms,
                "boot_id": e.boot_id,
                "seq": e.seq,
                "class": crate::event_class_name(e.event.class),
                "code": e.event.code,
                "active": e.event.active,
                "value": e.event.value,
                "detail": e.event.detail,
            })
        })
        .collect();
    let truncated = events.len() > MAX_EVENTS;
    events.truncate(MAX_EVENTS);
    Ok(Json(json!({
        "meter": meter.id.as_str(),
        "from_ms": from,
        "to_ms": to,
        "truncated": truncated,
        "events": events,
    })))
}
