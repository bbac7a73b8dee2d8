//! The alarm and case API (DESIGN §3.7): operators list and work alarms, follow cases through
//! open → inspecting → confirmed | dismissed, and export decided cases as training labels for
//! `wattline theft train --labels`. Customers never see alarms or cases (403).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiError, AppState, Caller, Role};
use crate::store::alarms::{
    AlarmAction, AlarmFilter, AlarmKind, AlarmStatus, CaseFilter, CaseState,
};

/// The routes of this area, merged into [`crate::http::app`].
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alarms", get(list_alarms))
        .route("/api/v1/alarms/{id}", get(get_alarm))
        .route("/api/v1/alarms/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alarms/{id}/assign", post(assign))
        .route("/api/v1/alarms/{id}/resolve", post(resolve))
        .route("/api/v1/cases", get(list_cases))
        .route("/api/v1/cases/labels.csv", get(labels_csv))
        .route("/api/v1/cases/{id}", get(get_case))
        .route("/api/v1/cases/{id}/transition", post(transition))
}

fn parse_id(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .map_err(|_| ApiError::not_found(format!("no {what} {id:?}")))
}

/// Filters of `GET /api/v1/alarms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmQuery {
    meter: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    /// `true`: conditions that still hold; `false`: cleared ones.
    active: Option<bool>,
    since_ms: Option<i64>,
    limit: Option<u32>,
}

async fn list_alarms(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlarmQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let bad = |e: crate::Error| ApiError::invalid(e.to_string().replace("invalid input: ", ""));
    let filter = AlarmFilter {
        meter: q.meter,
        kind: q
            .kind
            .as_deref()
            .map(AlarmKind::parse)
            .transpose()
            .map_err(bad)?,
        status: q
            .status
            .as_deref()
            .map(AlarmStatus::parse)
            .transpose()
            .map_err(bad)?,
        active: q.active,
        since_ms: q.since_ms,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let alarms = state.db.alarms().alarms(&filter).await?;
    Ok(Json(json!({ "alarms": alarms })))
}

async fn get_alarm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id, "alarm")?;
    match state.db.alarms().alarm(id).await? {
        Some(a) => Ok(Json(json!(a))),
        None => Err(ApiError::not_found(format!("no alarm {id}"))),
    }
}

async fn alarm_action(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: AlarmAction,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(id, "alarm")?;
    let store = state.db.alarms();
    let Some(current) = store.alarm(id).await? else {
        return Err(ApiError::not_found(format!("no alarm {id}")));
    };
    if current.status == AlarmStatus::Resolved {
        return Err(ApiError::conflict(format!(
            "alarm {id} is already resolved"
        )));
    }
    let alarm = store
        .alarm_action(id, &action, &caller.username, crate::now_ms())
        .await?;
    tracing::info!(target: "audit", alarm = id, actor = %caller.username, action = ?action, "alarm updated");
    Ok(Json(json!(alarm)))
}

async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    alarm_action(&state, &caller, &id, AlarmAction::Acknowledge).await
}

/// Body of `POST /api/v1/alarms/{id}/assign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// Who is to handle it.
    to: String,
}

async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) =
        body.map_err(|e| ApiError::invalid(format!("assign body: {}", e.body_text())))?;
    if body.to.trim().is_empty() || body.to.len() > 200 {
        return Err(ApiError::invalid(
            "`to` must name someone (1 to 200 characters)",
        ));
    }
    alarm_action(&state, &caller, &id, AlarmAction::Assign(body.to)).await
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    alarm_action(&state, &caller, &id, AlarmAction::Resolve).await
}

/// Filters of `GET /api/v1/cases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseQuery {
    meter: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

async fn list_cases(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CaseQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let filter = CaseFilter {
        meter: q.meter,
        state: q
            .state
            .as_deref()
            .map(CaseState::parse)
            .transpose()
            .map_err(|e| ApiError::invalid(e.to_string().replace("invalid input: ", "")))?,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let mut cases = state.db.alarms().cases(&filter).await?;
    // The list shows the cases, not their full evidence (`GET /api/v1/cases/{id}` has it).
    for c in &mut cases {
        let items = c.evidence["items"].as_array().map_or(0, Vec::len);
        c.evidence = json!({ "items": items });
    }
    Ok(Json(json!({ "cases": cases })))
}

async fn get_case(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id, "case")?;
    let store = state.db.alarms();
    let Some(case) = store.case(id).await? else {
        return Err(ApiError::not_found(format!("no case {id}")));
    };
    let history = store.case_history(id).await?;
    let mut alarms = Vec::new();
    for a in &case.alarm_ids {
        if let Some(a) = store.alarm(*a).await? {
            alarms.push(a);
        }
    }
    Ok(Json(
        json!({ "case": case, "history": history, "alarms": alarms }),
    ))
}

/// Body of `POST /api/v1/cases/{id}/transition`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    /// `inspecting`, `confirmed` or `dismissed`.
    to: String,
    /// Why (required; kept in the case history).
    reason: String,
    /// Optionally hand the case to someone.
    assignee: Option<String>,
}

async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<TransitionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id, "case")?;
    let Json(body) =
        body.map_err(|e| ApiError::invalid(format!("transition body: {}", e.body_text())))?;
    let to = CaseState::parse(&body.to)
        .map_err(|e| ApiError::invalid(e.to_string().replace("invalid input: ", "")))?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::invalid(
            "a case transition needs a reason (1 to 2000 characters)",
        ));
    }
    let store = state.db.alarms();
    let Some(case) = store.case(id).await? else {
        return Err(ApiError::not_found(format!("no case {id}")));
    };
    if !case.state.can_become(to) {
        return Err(ApiError::conflict(format!(
            "case {id} cannot go from {} to {to}",
            case.state
        )));
    }
    let from = case.state;
    let case = store
        .transition_case(
            id,
            to,
            &caller.username,
            reason,
            body.assignee
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty()),
            crate::now_ms(),
        )
        .await?;
    tracing::info!(
        target: "audit",
        case = id,
        actor = %caller.username,
        from = %from,
        to = %to,
        reason = %reason,
        "case transition"
    );
    Ok(Json(json!(case)))
}

/// `meter_id,label` (1 = theft confirmed, 0 = dismissed): the input of
/// `wattline theft train --labels`.
async fn labels_csv(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let labels = state.db.alarms().case_labels().await?;
    let mut csv = String::from("meter_id,label\n");
    for (meter, theft) in labels {
        csv.push_str(&format!("{meter},{}\n", u8::from(theft)));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"labels.csv\"",
            ),
        ],
        csv,
    ))
}
