//! `/metrics` in the Prometheus text format, and the HTTP request counters behind it.
//!
//! The server's parts count through the `metrics` facade (`wattline_ingest_records_total{result}`,
//! `wattline_broker_*`, `wattline_sse_subscribers`, `wattline_commands_*`, ...);
//! [`install_recorder`] installs one Prometheus recorder per process (call it at start, before
//! ingest runs, so no count is lost; building the router calls it too). [`track`] is the axum
//! middleware counting requests and their latency per route template (not per concrete path,
//! so meter ids do not explode the label set).
//!
//! Access: `/metrics` needs the admin role (the admin bearer token) unless the operator set
//! [`AppState::metrics_public`](crate::http::AppState) (config `metrics_public`, default false)
//! for a scraper on a trusted network.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::http::{ApiError, AppState, Caller, Role};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Request latency buckets, seconds: API answers are expected in milliseconds.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle. When another
/// recorder was installed first (an embedding program's), the handle renders only what was
/// recorded through it, and a warning says so.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(
                Matcher::Full("wattline_http_request_duration_seconds".into()),
                &LATENCY_BUCKETS_S,
            ) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: latency buckets refused; using summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "metrics: another recorder is installed; /metrics shows only what reaches this one"
                );
            }
            handle
        })
        .clone()
}

/// `GET /metrics`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    if !state.metrics_public {
        caller?.require(Role::Admin)?;
    }
    let handle = install_recorder();
    // Gauges read from shared state at scrape time.
    metrics::gauge!("wattline_live_receivers").set(state.live.receiver_count() as f64);
    handle.run_upkeep();
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response())
}

/// Middleware: counts every request by method, route template and status, and its latency.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "wattline_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "wattline_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(start.elapsed().as_secs_f64());
    response
}
