//! The web application (DESIGN §7, issue 6): server-rendered pages for operators (fleet, meter,
//! registration) and customers (my meters, history, patterns, bills, CSV), with htmx for small
//! updates, uPlot charts and SVG gauges fed by server-sent events. No Node build step: templates
//! are askama (compiled, auto-escaped) and the assets are embedded ([`assets`]).
//!
//! Every page takes the same [`Caller`] as the JSON API and checks access the same way
//! (`visible_meter`: 404 for a meter the caller may not see). A browser without a session is
//! sent to `/login`; state-changing forms carry the session's CSRF token, which the auth guard
//! checks.

mod alarms;
pub mod assets;
mod customer;
mod data;
mod operator;

use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::{ApiError, AppState, Caller, Role};

/// The page routes (merged into [`crate::http::app`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/assets/{ver}/{name}", get(assets::serve))
        .route("/fleet", get(operator::fleet))
        .route("/meters/{id}", get(operator::meter_page))
        .route("/meters/{id}/relay", post(operator::relay))
        .route("/commands/{id}", get(operator::command_status))
        .route("/register", get(operator::register_page))
        .route("/register/customer", post(operator::save_customer))
        .route("/register/meter", post(operator::save_meter))
        .route("/meters/{id}/deregister", post(operator::deregister))
        .route("/alarms", get(alarms::page))
        .route("/alarms/{id}", post(alarms::act))
        .route("/my", get(customer::portal))
        .route("/my/meters/{id}", get(customer::meter))
        .route("/my/meters/{id}/readings.csv", get(customer::csv))
        .route("/web/meters/{id}/series.json", get(data::series))
        .route("/web/meters/{id}/profile.json", get(data::profile))
        .route("/web/meters/{id}/live", get(data::live))
        .route("/web/fleet/live", get(data::fleet_live))
}

/// What every page's frame needs: who is signed in, the navigation, the CSRF token for forms.
pub(crate) struct Frame {
    /// Page title.
    pub title: String,
    /// Signed-in user name.
    pub username: String,
    /// Whether to show the operator navigation.
    pub staff: bool,
    /// The session's CSRF token ("" for bearer tokens, which need none).
    pub csrf: String,
    /// Asset URLs.
    pub css: String,
    pub app_js: String,
    pub htmx_js: String,
    pub uplot_js: String,
}

impl Frame {
    pub(crate) fn new(title: impl Into<String>, caller: &Caller) -> Self {
        Self {
            title: title.into(),
            username: caller.username.clone(),
            staff: caller.role >= Role::Operator,
            csrf: caller.csrf_token.clone().unwrap_or_default(),
            css: assets::url("app.css"),
            app_js: assets::url("app.js"),
            htmx_js: assets::url("htmx.min.js"),
            uplot_js: assets::url("uPlot.iife.min.js"),
        }
    }

    /// `{"X-CSRF-Token": "…"}` for `hx-headers` (htmx requests that are not forms).
    pub(crate) fn csrf_headers(&self) -> String {
        serde_json::json!({ "X-CSRF-Token": self.csrf }).to_string()
    }
}

/// Renders a template into a response (a rendering failure is an internal error, logged).
pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// A page handler's caller: signed in, or sent to the sign-in page (coming back here after).
// The error is the redirect response itself, returned straight from page handlers.
#[allow(clippy::result_large_err)]
pub(crate) fn signed_in(caller: Result<Caller, ApiError>, uri: &Uri) -> Result<Caller, Response> {
    caller.map_err(|e| {
        if e.status == StatusCode::UNAUTHORIZED {
            let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let q: String = form_urlencode(next);
            Redirect::to(&format!("/login?next={q}")).into_response()
        } else {
            e.into_response()
        }
    })
}

/// Percent-encodes a query value.
pub(crate) fn form_urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /`: operators to the fleet, customers to their portal.
async fn home(caller: Result<Caller, ApiError>, uri: Uri) -> Response {
    match signed_in(caller, &uri) {
        Ok(c) if c.role >= Role::Operator => Redirect::to("/fleet").into_response(),
        Ok(_) => Redirect::to("/my").into_response(),
        Err(r) => r,
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    css: String,
    next: String,
    error: Option<&'static str>,
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// `GET /login`: the sign-in form; it posts to the accounts route `/api/v1/auth/login`.
async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let next = q
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
        .unwrap_or_else(|| "/".to_owned());
    let error = match q.error.as_deref() {
        Some("locked") => Some("Too many failed sign-ins. Wait a few minutes and try again."),
        Some(_) => Some("Wrong user name or password."),
        None => None,
    };
    render(&LoginPage {
        css: assets::url("app.css"),
        next,
        error,
    })
}

/// Formats a Unix-ms instant as `YYYY-MM-DD HH:MM` in `tz` (UTC when unknown).
pub(crate) fn local_time(ms: i64, tz: &str) -> String {
    use chrono::TimeZone;
    let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    match tz.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => "-".to_owned(),
    }
}

/// A number with `digits` decimals, `-` for none.
pub(crate) fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".to_owned(),
    }
}

/// The live gauges: key in the stream, label, unit, scale minimum and maximum.
pub(crate) const GAUGES: [(&str, &str, &str, &str, &str); 5] = [
    ("v", "Voltage", "V", "180", "260"),
    ("i", "Current", "A", "0", "60"),
    ("p", "Power", "W", "-5000", "15000"),
    ("pf", "Power factor", "", "0", "1"),
    ("f", "Frequency", "Hz", "49", "51"),
];
