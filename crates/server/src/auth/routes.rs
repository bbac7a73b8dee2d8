//! The accounts API: sign-in/out and `me`, user administration, API tokens, and the audit
//! trail (JSON and CSV export).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::guard::form_pairs;
use super::{
    SESSION_COOKIE, Scope, audit, audit_outcome, check_new_password, create_api_token, create_user,
    hash_password, session_cookie, sign_in, sign_out, update_user,
};
use crate::http::{ApiError, AppState, Caller, Role};
use crate::store::accounts::{AuditFilter, UserChange};

/// Most audit lines one JSON page returns.
const AUDIT_PAGE_MAX: u32 = 1000;
/// Most audit lines one CSV export returns.
const AUDIT_EXPORT_MAX: u32 = 100_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(super::guard::LOGIN_PATH, post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{id}", patch(change_user))
        .route("/api/v1/users/{id}/password", post(reset_password))
        .route("/api/v1/tokens", get(list_tokens).post(add_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit_json))
        .route("/api/v1/audit.csv", get(audit_csv))
}

fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// Parses a JSON body into `T` with our error shape.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// A redirect target that stays on this site: a path starting with one `/`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/v1/auth/login` with JSON `{"username","password"}` (answers JSON with the CSRF
/// token) or an HTML form `username`, `password`, optional `next` (answers 303 to `next`, or to
/// `/login?error=…` on failure).
async fn login(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let form = is_form(&parts.headers);
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return ApiError::invalid("the sign-in body is too large").into_response(),
    };
    let (username, password, next) = if form {
        let f: HashMap<String, String> = form_pairs(&bytes).into_iter().rev().collect();
        (
            f.get("username").cloned().unwrap_or_default(),
            f.get("password").cloned().unwrap_or_default(),
            f.get("next").cloned(),
        )
    } else {
        match json_body::<LoginBody>(&bytes) {
            Ok(b) => (b.username, b.password, None),
            Err(e) => return e.into_response(),
        }
    };
    let result = sign_in(&state, &username, &password, remote).await;
    match (result, form) {
        (Ok(s), false) => {
            let body = Json(json!({
                "user": s.user,
                "csrf_token": s.csrf_token,
                "expires_ms": s.expires_ms,
            }));
            let mut r = body.into_response();
            if let Ok(v) = HeaderValue::from_str(&s.set_cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        (Ok(s), true) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&s.set_cookie) {
                h.insert(SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(safe_next(next.as_deref())) {
                h.insert(LOCATION, v);
            }
            r
        }
        (Err(e), false) => e.into_response(),
        (Err(e), true) => {
            let why = if e.status == StatusCode::TOO_MANY_REQUESTS {
                "locked"
            } else if e.status == StatusCode::UNAUTHORIZED {
                "invalid"
            } else {
                return e.into_response();
            };
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(
                LOCATION,
                HeaderValue::from_static(if why == "locked" {
                    "/login?error=locked"
                } else {
                    "/login?error=invalid"
                }),
            );
            r
        }
    }
}

/// `POST /api/v1/auth/logout`: revokes the session server-side and clears the cookie.
async fn logout(State(state): State<AppState>, caller: Caller, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let session = crate::http::session_cookie_of(&parts).map(str::to_owned);
    if caller.csrf_token.is_some()
        && let Some(id) = session
    {
        if let Err(e) = sign_out(&state, &id).await {
            return e.into_response();
        }
        if let Err(e) = audit(
            &state,
            &caller,
            "logout",
            &format!("user:{}", caller.username),
            "signed out",
        )
        .await
        {
            return e.into_response();
        }
    }
    let clear = session_cookie("", 0, state.config.secure_cookies);
    let mut r = if is_form(&parts.headers) {
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/login"));
        r
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// `GET /api/v1/auth/me`: who the caller is, and the CSRF token pages must echo.
async fn me(caller: Caller) -> Json<serde_json::Value> {
    Json(json!({
        "user_id": caller.user_id,
        "username": caller.username,
        "role": caller.role.as_str(),
        "customer_id": caller.customer_id,
        "csrf_token": caller.csrf_token,
        "scopes": caller.scopes.as_ref().map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>()),
        "session_cookie": SESSION_COOKIE,
    }))
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown role {s:?}: use admin, operator or customer"
        ))
    })
}

/// A numeric id from the path; anything else is a 404 (like an unknown id).
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    p.ok()
        .and_then(|Path(s)| s.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found("no such id"))
}

async fn list_users(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(json!({ "users": state.db.accounts().users().await? })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    customer_id: Option<String>,
}

async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let b: AddUser = json_body(&body)?;
    let role = parse_role(&b.role)?;
    let user = create_user(
        &state,
        &caller.username,
        caller.remote,
        &b.username,
        &b.password,
        role,
        b.customer_id,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeUser {
    #[serde(default)]
    role: Option<String>,
    /// Absent: unchanged; `null`: remove.
    #[serde(default, with = "double_option")]
    customer_id: Option<Option<String>>,
    #[serde(default)]
    disabled: Option<bool>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

async fn change_user(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(id)?;
    let b: ChangeUser = json_body(&body)?;
    let accounts = state.db.accounts();
    let Some(before) = accounts.user(id).await? else {
        return Err(ApiError::not_found(format!("no user {id}")));
    };
    let role = b.role.as_deref().map(parse_role).transpose()?;
    if caller.user_id == Some(id)
        && (role.is_some_and(|r| r != Role::Admin) || b.disabled == Some(true))
    {
        return Err(ApiError::conflict(
            "you cannot demote or disable your own account; ask another admin",
        ));
    }
    let new_role = role.unwrap_or(before.role);
    let new_customer = match &b.customer_id {
        Some(c) => c.clone(),
        None if new_role == Role::Customer => before.customer_id.clone(),
        None => None,
    };
    let change = UserChange {
        role,
        customer_id: Some(new_customer),
        disabled: b.disabled,
    };
    let after = update_user(&state, &caller.username, caller.remote, &before, &change).await?;
    Ok(Json(json!({ "user": after })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let id = path_id(id)?;
    let b: NewPassword = json_body(&body)?;
    check_new_password(&b.password)?;
    let accounts = state.db.accounts();
    let Some(user) = accounts.user(id).await? else {
        return Err(ApiError::not_found(format!("no user {id}")));
    };
    let pw = b.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(ApiError::internal)??;
    accounts.set_password(id, &hash, crate::now_ms()).await?;
    let ended = accounts.revoke_user_sessions(id).await?;
    audit(
        &state,
        &caller,
        "user.password_reset",
        &format!("user:{}", user.username),
        &format!("password reset; {ended} session(s) ended"),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddToken {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// `POST /api/v1/tokens`: a token for the caller's own account. Its scopes cannot exceed the
/// account's role (or, from a token, that token's scopes). The secret is in this answer only.
async fn add_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(user_id) = caller.user_id else {
        return Err(ApiError::invalid(
            "the bootstrap admin token has no account; sign in as a user to create API tokens",
        ));
    };
    let b: AddToken = json_body(&body)?;
    let Some(owner) = state.db.accounts().user(user_id).await? else {
        return Err(ApiError::unauthenticated());
    };
    let (secret, token) = create_api_token(
        &state,
        &caller.username,
        caller.remote,
        &owner,
        &b.name,
        &b.scopes,
        b.expires_in_days,
        caller.scopes.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": secret, "info": token })),
    )
        .into_response())
}

/// `GET /api/v1/tokens`: the caller's tokens (`?all=true` for an admin: everybody's).
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let all = q.get("all").is_some_and(|v| v == "true");
    let owner = if all {
        caller.require(Role::Admin)?;
        None
    } else {
        Some(caller.user_id.ok_or_else(|| {
            ApiError::invalid("the bootstrap admin token has no tokens; use ?all=true")
        })?)
    };
    Ok(Json(json!({ "tokens": state.db.accounts().tokens(owner).await? })).into_response())
}

/// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens (an admin: anybody's).
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let owner = if caller.role >= Role::Admin && caller.require_scope(Scope::Admin).is_ok() {
        None
    } else {
        caller.user_id
    };
    if owner.is_none() && caller.role < Role::Admin {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    if !state.db.accounts().revoke_token(id, owner).await? {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    audit(
        &state,
        &caller,
        "token.revoke",
        &format!("token-id:{id}"),
        "revoked",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn audit_filter(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    default_limit: u32,
    max_limit: u32,
) -> Result<AuditFilter, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("{k} must be an integer, got {v:?}")))
            })
            .transpose()
    };
    let limit = match int("limit")? {
        None => default_limit,
        Some(n) if n >= 1 => n.min(i64::from(max_limit)) as u32,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit must be at least 1, got {n}"
            )));
        }
    };
    for k in q.keys() {
        if ![
            "actor",
            "action",
            "target",
            "outcome",
            "since_ms",
            "until_ms",
            "before_id",
            "limit",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::invalid(format!(
                "unknown filter {k:?}: use actor, action, target, outcome, since_ms, until_ms, before_id, limit"
            )));
        }
    }
    Ok(AuditFilter {
        actor: text("actor"),
        action: text("action"),
        target: text("target"),
        outcome: text("outcome"),
        since_ms: int("since_ms")?,
        until_ms: int("until_ms")?,
        before_id: int("before_id")?,
        limit,
    })
}

/// `GET /api/v1/audit`: newest first, filtered; page with `before_id`.
async fn audit_json(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let filter = audit_filter(q, 100, AUDIT_PAGE_MAX)?;
    let entries = state.db.accounts().audit(&filter).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// One CSV field: quoted, quotes doubled, and a leading `= + - @` defused so a spreadsheet
/// does not run it as a formula (CSV injection).
fn csv_field(s: &str) -> String {
    let defused = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

/// `GET /api/v1/audit.csv`: the same filters, as a CSV download (up to 100 000 lines).
async fn audit_csv(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let filter = audit_filter(q, AUDIT_EXPORT_MAX, AUDIT_EXPORT_MAX)?;
    let entries = state.db.accounts().audit(&filter).await?;
    let mut out = String::from("id,at_ms,at_utc,actor,remote,action,target,detail,outcome\n");
    for e in &entries {
        let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            e.id,
            e.at_ms,
            at,
            csv_field(&e.actor),
            csv_field(e.remote.as_deref().unwrap_or("")),
            csv_field(&e.action),
            csv_field(&e.target),
            csv_field(&e.detail),
            csv_field(&e.outcome),
        ));
    }
    audit_outcome(
        &state,
        &caller.username,
        caller.remote,
        "audit.export",
        "audit",
        &format!("{} line(s)", entries.len()),
        "ok",
    )
    .await?;
    let mut r = out.into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"wattline-audit.csv\""),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field("ok"), "\"ok\"");
    }

    #[test]
    fn redirects_stay_on_site() {
        assert_eq!(safe_next(Some("/meters")), "/meters");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
