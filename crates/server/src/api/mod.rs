//! The JSON HTTP API under `/api/v1` (DESIGN §3.7): meters, customers, readings with automatic
//! resolution, live server-sent events, events, commands, quarantine, and its OpenAPI document;
//! plus `/metrics` (Prometheus text).
//!
//! Every route is registered through [`Api::route`], which records its method, path and
//! documentation next to the handler: the OpenAPI document is generated from that same list,
//! so a route cannot exist without being documented (a test checks both directions).
//!
//! Access: every handler takes a [`Caller`]. Customers see only their own meters and customer
//! record (others answer 404, exactly like missing ones); writes need `Operator`;
//! deregistration needs `Admin`.

mod commands;
mod customers;
mod events;
mod live;
mod meters;
pub(crate) mod metrics;
mod openapi;
mod params;
mod quarantine;
mod readings;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use serde_json::Value;

use crate::http::{AppState, Role};

pub use self::metrics::install_recorder;

/// Largest request body the API accepts (bigger ones answer 413): every body is a small JSON
/// object.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The prefix of every API route.
pub const PREFIX: &str = "/api/v1";

/// What the OpenAPI document says about one route.
#[derive(Debug, Clone)]
pub(crate) struct RouteDoc {
    /// `get`, `post`, `patch`, `put` or `delete`.
    pub method: &'static str,
    /// Path below the prefix, axum/OpenAPI template syntax (`/meters/{id}`).
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// Query parameters: name, description.
    pub query: &'static [(&'static str, &'static str)],
    /// JSON schema of the request body, when there is one.
    pub body: Option<fn() -> Value>,
    /// Media type and description of the success response.
    pub response: (&'static str, &'static str),
}

impl RouteDoc {
    fn new(method: &'static str, path: &'static str, summary: &'static str, role: Role) -> Self {
        Self {
            method,
            path,
            summary,
            role,
            query: &[],
            body: None,
            response: ("application/json", "the result"),
        }
    }
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Self {
        self.query = q;
        self
    }
    fn body(mut self, schema: fn() -> Value) -> Self {
        self.body = Some(schema);
        self
    }
    fn response(mut self, media: &'static str, description: &'static str) -> Self {
        self.response = (media, description);
        self
    }
}

/// A router under construction that remembers what it registered.
struct Api {
    router: Router<AppState>,
    docs: Vec<RouteDoc>,
}

impl Api {
    fn new() -> Self {
        Self {
            router: Router::new(),
            docs: Vec::new(),
        }
    }

    /// Registers `handler` for `doc.method doc.path` and keeps `doc` for the OpenAPI document.
    fn route<H, T>(mut self, doc: RouteDoc, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match doc.method {
            "get" => MethodFilter::GET,
            "post" => MethodFilter::POST,
            "put" => MethodFilter::PUT,
            "patch" => MethodFilter::PATCH,
            "delete" => MethodFilter::DELETE,
            other => panic!("api route table: unsupported method {other}"),
        };
        self.router = self.router.route(doc.path, on(filter, handler));
        self.docs.push(doc);
        self
    }
}

/// Every API route with its documentation, in one place.
fn build() -> Api {
    use Role::*;
    Api::new()
        .route(
            RouteDoc::new("get", "/meters", "List meters (customers: only their own)", Customer)
                .query(&[
                    ("status", "`active` or `deregistered`"),
                    ("customer", "customer id"),
                    ("site", "site label (exact)"),
                    ("search", "substring of the meter id or site, case-insensitive"),
                    ("limit", "most meters to return, 1 to 10000 (default 1000)"),
                ]),
            meters::list,
        )
        .route(
            RouteDoc::new("post", "/meters", "Register a meter", Operator)
                .body(meters::register_schema),
            meters::register,
        )
        .route(
            RouteDoc::new(
                "get",
                "/meters/{id}",
                "One meter with its latest reading, relay state (when known) and last contact",
                Customer,
            ),
            meters::get,
        )
        .route(
            RouteDoc::new("patch", "/meters/{id}", "Update a meter's settings", Operator)
                .body(meters::update_schema),
            meters::update,
        )
        .route(
            RouteDoc::new(
                "delete",
                "/meters/{id}",
                "Deregister a meter (status becomes deregistered; its data is kept)",
                Admin,
            ),
            meters::deregister,
        )
        .route(
            RouteDoc::new(
                "put",
                "/meters/{id}/customer",
                "Assign a meter to a customer (or unassign with null)",
                Operator,
            )
            .body(meters::assign_schema),
            meters::assign,
        )
        .route(
            RouteDoc::new(
                "get",
                "/meters/{id}/readings",
                "Readings in a range: raw or rollups, chosen automatically unless asked",
                Customer,
            )
            .query(&[
                ("from", "start, ISO 8601 (RFC 3339) or Unix ms; default `to` minus 24 h"),
                ("to", "end (exclusive), ISO 8601 or Unix ms; default now"),
                ("resolution", "`auto` (default), `raw`, `15min`, `hour`, `day` or `month`"),
            ]),
            readings::get,
        )
        .route(
            RouteDoc::new(
                "get",
                "/meters/{id}/live",
                "Server-sent events: this meter's records as they are stored",
                Customer,
            )
            .response(
                "text/event-stream",
                "`records` events (JSON), `lagged` events when this subscriber fell behind, keep-alive comments",
            ),
            live::meter,
        )
        .route(
            RouteDoc::new(
                "get",
                "/live",
                "Server-sent events: records of every meter the caller may see, as they are stored",
                Customer,
            )
            .query(&[(
                "meter",
                "only this meter (404 when the caller may not see it)",
            )])
            .response(
                "text/event-stream",
                "`records` events (JSON), `lagged` events when this subscriber fell behind, keep-alive comments",
            ),
            live::fleet,
        )
        .route(
            RouteDoc::new("get", "/meters/{id}/events", "Events of a meter in a range", Customer)
                .query(&[
                    ("from", "start, ISO 8601 or Unix ms; default `to` minus 30 days"),
                    ("to", "end (exclusive), ISO 8601 or Unix ms; default now"),
                    (
                        "class",
                        "`tamper`, `relay`, `limiter`, `power_quality`, `boot`, `clock` or `other`",
                    ),
                ]),
            events::list,
        )
        .route(
            RouteDoc::new(
                "post",
                "/meters/{id}/commands",
                "Queue a command (relay, limiter, reporting interval, clock) with a reason and an expiry",
                Operator,
            )
            .body(commands::create_schema),
            commands::create,
        )
        .route(
            RouteDoc::new("get", "/meters/{id}/commands", "Commands of a meter, newest first", Customer)
                .query(&[(
                    "status",
                    "`QUEUED`, `SENT`, `DELIVERED`, `SUCCEEDED`, `FAILED` or `EXPIRED`",
                )]),
            commands::list,
        )
        .route(
            RouteDoc::new("get", "/commands/{id}", "A command with its status and audit log", Customer),
            commands::get,
        )
        .route(
            RouteDoc::new("get", "/customers", "List customers (a customer sees only itself)", Customer),
            customers::list,
        )
        .route(
            RouteDoc::new("post", "/customers", "Create a customer", Operator)
                .body(customers::create_schema),
            customers::create,
        )
        .route(
            RouteDoc::new("get", "/customers/{id}", "One customer", Customer),
            customers::get,
        )
        .route(
            RouteDoc::new("patch", "/customers/{id}", "Update a customer", Operator)
                .body(customers::update_schema),
            customers::update,
        )
        .route(
            RouteDoc::new("get", "/quarantine", "What ingest refused, newest first, with the reason", Operator)
                .query(&[
                    ("limit", "most entries, 1 to 1000 (default 100)"),
                    ("raw", "`true` to include the received bytes as base64"),
                ]),
            quarantine::list,
        )
        .route(
            RouteDoc::new("get", "/openapi.json", "This document (OpenAPI 3.1)", Customer),
            openapi::get,
        )
}

/// The documentation of every API route (for the OpenAPI document).
pub(crate) fn docs() -> Vec<RouteDoc> {
    build().docs
}

/// The API routes, nested under [`PREFIX`], plus `/metrics`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .nest(PREFIX, build().router)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route("/metrics", axum::routing::get(self::metrics::get))
}

#[cfg(test)]
use openapi::path_params as openapi_path_params;

#[cfg(test)]
mod tests;
