//! Who is asking: the [`Caller`] extractor every data handler takes, and the authorization
//! checks on it. A request without valid credentials never reaches a handler (401).
//!
//! Resolution, in order: `Authorization: Bearer` with the bootstrap admin token from the config
//! or a user's `wlt_…` API token (with its scopes); else the `wattline_session` cookie of a
//! browser session (which carries the CSRF token). The [`crate::auth::guard`] layer resolves
//! once per request and leaves the answer in the request's extensions; without the layer (unit
//! tests of handlers) the extractor resolves itself.

use std::net::IpAddr;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use schema::MeterId;

use super::{ApiError, AppState};
use crate::Meter;
use crate::auth::{AuthResolution, Scope};

/// A role (DESIGN §3.7). Ordered: `Admin` may do all an `Operator` may, who may do all a
/// `Customer` may (on every customer's meters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Sees only the meters of the customer the account is bound to.
    Customer,
    /// Runs the fleet: every meter, relay commands, alarms, cases, payments.
    Operator,
    /// Everything, including users, roles and tariffs.
    Admin,
}

impl Role {
    /// `admin`, `operator` or `customer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses `admin`, `operator` or `customer`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account's id; `None` for the bootstrap admin token.
    pub user_id: Option<i64>,
    /// Login name (for the audit trail).
    pub username: String,
    /// The role.
    pub role: Role,
    /// For `Customer`: the customer the account is bound to.
    pub customer_id: Option<String>,
    /// Where the request came from, when known (audit trail, rate limits).
    pub remote: Option<IpAddr>,
    /// For a browser session: the token state-changing requests must echo (CSRF), for pages
    /// to embed. `None` for bearer tokens, which browsers never send on their own.
    pub csrf_token: Option<String>,
    /// For a user's API token: what it may do (`None`: a session or the bootstrap token, limited
    /// by the role only).
    pub scopes: Option<Vec<Scope>>,
}

impl Caller {
    /// Fails with 403 unless the caller has at least `role`. An API token needs the `admin`
    /// scope for admin actions too (a read token of an admin is not an admin).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role < role {
            return Err(ApiError::forbidden(format!(
                "this needs the {} role",
                role.as_str()
            )));
        }
        if role == Role::Admin {
            self.require_scope(Scope::Admin)?;
        }
        Ok(())
    }

    /// Fails with 403 when the caller is an API token without `scope`. Sessions and the
    /// bootstrap token pass (their role decides). The [`crate::auth::guard`] layer already
    /// demands `read` for reads, `write` for changes, `commands` for command routes and `admin`
    /// for administration; handlers call this for anything finer.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.scopes {
            Some(s) if !s.contains(&scope) => Err(ApiError::forbidden(format!(
                "this API token lacks the {} scope",
                scope.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see this customer's data.
    pub fn may_see_customer(&self, customer_id: &str) -> bool {
        self.role >= Role::Operator || self.customer_id.as_deref() == Some(customer_id)
    }

    /// Whether the caller may see this meter's data.
    pub fn may_see_meter(&self, meter: &Meter) -> bool {
        self.role >= Role::Operator
            || matches!((&meter.customer, &self.customer_id), (Some(m), Some(c)) if m == c)
    }

    /// The meter, if it exists and the caller may see it. A meter the caller may not see
    /// answers 404 exactly like a missing one, so ids cannot be probed.
    pub async fn visible_meter(&self, state: &AppState, id: &str) -> Result<Meter, ApiError> {
        let not_found = || ApiError::not_found(format!("no meter {id:?}"));
        let id = MeterId::parse(id).map_err(|_| not_found())?;
        match state.store.meter(&id).await? {
            Some(m) if self.may_see_meter(&m) => Ok(m),
            _ => Err(not_found()),
        }
    }
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(AuthResolution(resolved)) = parts.extensions.get::<AuthResolution>() {
            return resolved.clone().ok_or_else(ApiError::unauthenticated);
        }
        resolve(parts, state)
            .await?
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The caller the request's credentials name, `None` when it has none or they are not valid.
/// A bearer header is decisive: when present, the cookie is not looked at.
pub(crate) async fn resolve(parts: &Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    if let Some(header) = authorization {
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Ok(None);
        };
        if let Some(admin) = state.config.admin_token.as_deref()
            && !admin.is_empty()
            && constant_time_eq(token.as_bytes(), admin.as_bytes())
        {
            return Ok(Some(Caller {
                user_id: None,
                username: "admin-token".to_owned(),
                role: Role::Admin,
                customer_id: None,
                remote,
                csrf_token: None,
                scopes: None,
            }));
        }
        return crate::auth::caller_from_api_token(state, token, remote).await;
    }
    match session_cookie(parts) {
        Some(id) => crate::auth::caller_from_session(state, id, remote).await,
        None => Ok(None),
    }
}

/// The value of the `wattline_session` cookie, if sent.
pub(crate) fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == crate::auth::SESSION_COOKIE)
        .map(|(_, v)| v.trim())
}
