//! Live server-sent events: `GET /api/v1/meters/{id}/live` (one meter) and `GET /api/v1/live`
//! (every meter the caller may see). Each stored batch becomes one `records` event as ingest
//! commits it (`AppState.live`). A subscriber too slow for the channel gets a `lagged` event
//! saying how many batches it missed — never a silent gap. Keep-alive comments every 15 s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures_util::Stream;
use schema::{Body, MeterId, Record};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::params::Params;
use crate::LiveBatch;
use crate::http::{ApiError, AppState, Caller, Role};

/// How often an idle stream sends a comment so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a fleet stream trusts its cached "may this customer see meter X" answers
/// (assignments change rarely; a reassignment takes effect within this time).
const VISIBILITY_TTL: Duration = Duration::from_secs(30);

/// One record as JSON: `seq`, `t_ms`, `kind` and the body's fields under `body`.
pub(crate) fn record_json(r: &Record) -> Value {
    let body = match &r.body {
        Body::Reading(x) => serde_json::to_value(x),
        Body::Event(x) => serde_json::to_value(x),
        Body::Ack(x) => serde_json::to_value(x),
        Body::Heartbeat(x) => serde_json::to_value(x),
        Body::Unknown { body_cbor, .. } => Ok(json!({
            "cbor_base64": base64::engine::general_purpose::STANDARD.encode(body_cbor)
        })),
    }
    .unwrap_or(Value::Null);
    json!({ "seq": r.seq, "t_ms": r.t_ms, "kind": r.body.kind(), "body": body })
}

fn batch_event(b: &LiveBatch) -> Event {
    let records: Vec<Value> = b.records.iter().map(record_json).collect();
    let data = json!({ "meter": b.meter.as_str(), "boot_id": b.boot_id, "records": records });
    Event::default().event("records").data(data.to_string())
}

/// Which batches a stream passes on.
enum Filter {
    /// One meter.
    Meter(MeterId),
    /// All meters (operators).
    All,
    /// The meters of one customer, looked up and cached.
    Customer {
        state: AppState,
        customer: String,
        cache: HashMap<MeterId, (bool, Instant)>,
    },
}

impl Filter {
    async fn passes(&mut self, meter: &MeterId) -> bool {
        match self {
            Filter::Meter(m) => m == meter,
            Filter::All => true,
            Filter::Customer {
                state,
                customer,
                cache,
            } => {
                if let Some((ok, at)) = cache.get(meter)
                    && at.elapsed() < VISIBILITY_TTL
                {
                    return *ok;
                }
                let ok = match state.store.meter(meter).await {
                    Ok(Some(m)) => m.customer.as_deref() == Some(customer.as_str()),
                    Ok(None) => false,
                    Err(e) => {
                        // Fail closed: a batch the stream cannot vouch for is not shown.
                        tracing::warn!(error = %e, %meter, "live stream: meter lookup failed");
                        return false;
                    }
                };
                cache.insert(meter.clone(), (ok, Instant::now()));
                ok
            }
        }
    }
}

/// Counts open live streams in `wattline_sse_subscribers` while it lives.
struct Subscriber;

impl Subscriber {
    fn new() -> Self {
        metrics::gauge!("wattline_sse_subscribers").increment(1.0);
        Subscriber
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!("wattline_sse_subscribers").decrement(1.0);
    }
}

struct StreamState {
    rx: broadcast::Receiver<Arc<LiveBatch>>,
    filter: Filter,
    _subscriber: Subscriber,
}

fn stream(
    rx: broadcast::Receiver<Arc<LiveBatch>>,
    filter: Filter,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let init = StreamState {
        rx,
        filter,
        _subscriber: Subscriber::new(),
    };
    futures_util::stream::unfold(init, |mut s| async move {
        loop {
            match s.rx.recv().await {
                Ok(batch) => {
                    if s.filter.passes(&batch.meter).await {
                        let ev = batch_event(&batch);
                        return Some((Ok(ev), s));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("wattline_sse_lagged_total").increment(1);
                    let ev = Event::default()
                        .event("lagged")
                        .data(json!({ "missed_batches": missed }).to_string());
                    return Some((Ok(ev), s));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

pub(crate) async fn meter(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let meter = caller.visible_meter(&state, &id).await?;
    let rx = state.live.subscribe();
    Ok(Sse::new(stream(rx, Filter::Meter(meter.id)))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// `GET /api/v1/live`, optionally `?meter=ID` for one meter (the same visibility rule as
/// `/meters/{id}/live`: a meter the caller may not see is a 404, never an empty stream).
pub(crate) async fn fleet(
    caller: Caller,
    State(state): State<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = Params::new(query, &["meter"])?;
    let filter = if let Some(id) = params.str("meter") {
        Filter::Meter(caller.visible_meter(&state, id).await?.id)
    } else if caller.role >= Role::Operator {
        Filter::All
    } else {
        match caller.customer_id.clone() {
            Some(customer) => Filter::Customer {
                state: state.clone(),
                customer,
                cache: HashMap::new(),
            },
            None => return Err(ApiError::forbidden("this account is bound to no customer")),
        }
    };
    let rx = state.live.subscribe();
    Ok(Sse::new(stream(rx, filter)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
