//! Who is asking: the [`Caller`] extractor every data handler takes, and the authorization
//! checks on it. A request without valid credentials never reaches a handler (401).
//!
//! Resolution today: the bootstrap admin bearer token from the config. The accounts area
//! (`crate::auth`) adds browser sessions and per-user API tokens behind the same type.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use schema::MeterId;

use super::{ApiError, AppState};
use crate::Meter;

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
}

impl Caller {
    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role",
                role.as_str()
            )))
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
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let (Some(token), Some(admin)) = (bearer, state.config.admin_token.as_deref())
            && !admin.is_empty()
            && constant_time_eq(token.as_bytes(), admin.as_bytes())
        {
            return Ok(Caller {
                user_id: None,
                username: "admin-token".to_owned(),
                role: Role::Admin,
                customer_id: None,
                remote: None,
                csrf_token: None,
            });
        }
        Err(ApiError::unauthenticated())
    }
}
