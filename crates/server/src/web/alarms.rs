//! The operators' alarms page: open alarms (theft, tamper, offline, overload, ...) with
//! acknowledge, assign and resolve, plus the recently resolved ones. Actions are plain forms
//! (CSRF token in a hidden field) handled here against the alarm store, audited.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Frame, local_time, render, signed_in};
use crate::http::{ApiError, AppState, Caller, Role};
use crate::store::alarms::{AlarmAction, AlarmFilter, AlarmStatus};

/// One alarm row.
pub(crate) struct AlarmRow {
    pub id: i64,
    pub meter: String,
    pub kind: String,
    pub severity: String,
    pub status: String,
    pub opened: String,
    pub message: String,
    pub assigned: String,
    pub open: bool,
}

#[derive(Template)]
#[template(path = "alarms.html")]
struct AlarmsPage {
    frame: Frame,
    rows: Vec<AlarmRow>,
}

fn word<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}").to_lowercase()
}

/// `GET /alarms`.
pub(crate) async fn page(
    caller: Result<Caller, ApiError>,
    uri: Uri,
    State(state): State<AppState>,
) -> Response {
    let caller = match signed_in(caller, &uri) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let view = async {
        caller.require(Role::Operator)?;
        let list = state
            .db
            .alarms()
            .alarms(&AlarmFilter {
                limit: 500,
                ..AlarmFilter::default()
            })
            .await?;
        let mut rows: Vec<AlarmRow> = list
            .iter()
            .map(|a| AlarmRow {
                id: a.id,
                meter: a.meter.clone(),
                kind: word(&a.kind),
                severity: word(&a.severity),
                status: word(&a.status),
                opened: local_time(a.opened_ms, "UTC"),
                message: a.message.clone(),
                assigned: a.assigned_to.clone().unwrap_or_default(),
                open: a.status != AlarmStatus::Resolved,
            })
            .collect();
        // Open ones first, newest first within each group (the store answers newest first).
        rows.sort_by_key(|r| !r.open);
        Ok::<_, ApiError>(render(&AlarmsPage {
            frame: Frame::new("Alarms", &caller),
            rows,
        }))
    };
    view.await.unwrap_or_else(|e| e.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    action: String,
    #[serde(default)]
    to: String,
}

/// `POST /alarms/{id}`: acknowledge, assign (`to`) or resolve.
pub(crate) async fn act(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let action = match f.action.as_str() {
        "acknowledge" => AlarmAction::Acknowledge,
        "resolve" => AlarmAction::Resolve,
        "assign" => {
            let to = f.to.trim();
            if to.is_empty() || to.len() > 200 {
                return Err(ApiError::invalid(
                    "assign needs a name (1 to 200 characters)",
                ));
            }
            AlarmAction::Assign(to.to_owned())
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown alarm action {other:?}: use acknowledge, assign or resolve"
            )));
        }
    };
    let store = state.db.alarms();
    let Some(current) = store.alarm(id).await? else {
        return Err(ApiError::not_found(format!("no alarm {id}")));
    };
    if current.status == AlarmStatus::Resolved {
        return Err(ApiError::conflict(format!(
            "alarm {id} is already resolved"
        )));
    }
    store
        .alarm_action(id, &action, &caller.username, crate::now_ms())
        .await?;
    crate::auth::audit(
        &state,
        &caller,
        "alarm.action",
        &format!("alarm:{id}"),
        &format!("{action:?}"),
    )
    .await?;
    Ok(Redirect::to("/alarms").into_response())
}
